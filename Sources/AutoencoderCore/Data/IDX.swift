import CKernels
import CZlib
import Foundation

/// A split of an IDX image set with its labels. Pixels stay UInt8 in memory (47 MB for the
/// 60,000 training images); batches are converted to Float on the fly. The pixels are this
/// process's array, or bytes in the node's shared window that every rank of the node reads
/// (`NodeSharedData`); `withPixels` reads either without copying.
public final class Dataset {
    public let name: String
    public let count: Int
    public let rows: Int
    public let cols: Int
    public let labels: [UInt8]
    public var dim: Int { rows * cols }
    /// The files it was read from and the SHA-256 of their whole decompressed content (computed
    /// while reading): the start-up check compares them across ranks. Nil for data made in memory.
    public internal(set) var source: Source?

    public struct Source: Equatable, Sendable {
        public var imagesPath: String, imagesSHA256: String
        public var labelsPath: String, labelsSHA256: String
    }

    private let own: [UInt8]?
    private let shared: UnsafePointer<UInt8>?
    /// Keeps the memory of `shared` alive.
    private let keeper: AnyObject?
    /// The pixels as an array. A node-shared set makes a private copy the first time it is asked
    /// for (only rank 0's report and anomaly scoring do); the training path uses `withPixels`.
    public private(set) lazy var pixels: [UInt8] = own ?? Array(UnsafeBufferPointer(start: shared!, count: count * dim))

    public init(name: String, count: Int, rows: Int, cols: Int, pixels: [UInt8], labels: [UInt8]) {
        self.name = name
        self.count = count
        self.rows = rows
        self.cols = cols
        self.own = pixels
        self.shared = nil
        self.keeper = nil
        self.labels = labels
    }

    /// A set whose `count · rows · cols` pixels lie at `pixels`, memory that `keeper` owns.
    init(name: String, count: Int, rows: Int, cols: Int, sharedPixels: UnsafePointer<UInt8>, keeper: AnyObject, labels: [UInt8]) {
        self.name = name
        self.count = count
        self.rows = rows
        self.cols = cols
        self.own = nil
        self.shared = sharedPixels
        self.keeper = keeper
        self.labels = labels
    }

    /// True when the pixels are the node's shared copy.
    public var isNodeShared: Bool { shared != nil }

    /// Runs `body` on the pixels (count · dim bytes) where they lie.
    @inline(__always) public func withPixels<R>(_ body: (UnsafeBufferPointer<UInt8>) throws -> R) rethrows -> R {
        if let shared { return try body(UnsafeBufferPointer(start: shared, count: count * dim)) }
        return try own!.withUnsafeBufferPointer(body)
    }

    /// Images [lo, hi) as a dataset of their own (the validation split and the rest): a view of
    /// the node's shared copy when the pixels are there, else a copy.
    public func slice(_ lo: Int, _ hi: Int) -> Dataset {
        precondition(0 <= lo && lo <= hi && hi <= count)
        let d: Dataset
        if let shared, let keeper {
            d = Dataset(name: name, count: hi - lo, rows: rows, cols: cols, sharedPixels: shared + lo * dim, keeper: keeper,
                        labels: Array(labels[lo..<hi]))
        } else {
            d = Dataset(name: name, count: hi - lo, rows: rows, cols: cols, pixels: Array(own![(lo * dim)..<(hi * dim)]),
                        labels: Array(labels[lo..<hi]))
        }
        d.source = source  // the file it came from (the start-up check compares every rank's files)
        return d
    }

    /// Keeps only the samples whose label passes `keep` (anomaly detection trains on one class).
    public func filtered(_ keep: (UInt8) -> Bool) -> Dataset {
        var px: [UInt8] = []
        var lb: [UInt8] = []
        for i in 0..<count where keep(labels[i]) {
            px.append(contentsOf: pixels[(i * dim)..<((i + 1) * dim)])
            lb.append(labels[i])
        }
        let d = Dataset(name: name, count: lb.count, rows: rows, cols: cols, pixels: px, labels: lb)
        d.source = source
        return d
    }
}

public enum Split: String, Codable, CaseIterable, Sendable {
    case train, test
    public var imageFile: String { self == .train ? "train-images-idx3-ubyte" : "t10k-images-idx3-ubyte" }
    public var labelFile: String { self == .train ? "train-labels-idx1-ubyte" : "t10k-labels-idx1-ubyte" }
}

/// Reader for the IDX format (raw or gzip through zlib), with validation of the magic number,
/// the dimensions, the file length and the image/label counts. Every failure is one line that
/// names the file and the cause.
///
/// Sizes from a header are checked before anything is allocated: against the file's length
/// (raw files must be exactly as long as the header says; a gzip file of C bytes cannot hold more
/// than 1032·C bytes, deflate's limit) and against the memory available. The pixels are then read
/// into a buffer that grows as data arrives, so a header that over-claims costs only what the file
/// really holds.
public enum IDX {
    /// Largest image or label count a header may claim.
    public static let maxCount = 100_000_000
    /// Deflate cannot expand one compressed byte into more than 1032 bytes.
    static let maxDeflateRatio = 1032

    /// The file for `base` in `dir`: `base.gz` when present, else `base`.
    public static func locate(_ base: String, in dir: String) throws -> String {
        for name in [base + ".gz", base] {
            let p = (dir as NSString).appendingPathComponent(name)
            var st = stat()
            if lstat(p, &st) == 0 { return p }  // whatever it is; opening it decides (a FIFO is an error, not "missing")
        }
        throw AETError.data("\((dir as NSString).appendingPathComponent(base + ".gz")): file not found (nor \(base))")
    }

    /// Loads a split from a directory holding the standard four files. An empty split is an
    /// error, and files that are byte for byte the *other* known dataset (by the built-in SHA-256
    /// of their content) get a one-line warning.
    public static func load(dir: String, split: Split, limit: Int? = nil, name: String = "") throws -> Dataset {
        let imgPath = try locate(split.imageFile, in: dir)
        let lblPath = try locate(split.labelFile, in: dir)
        // The small labels file first, then the counts compared from the image header alone:
        // a header that disagrees costs nothing, not a read of the claimed images.
        let lbl = try labels(lblPath, limit: limit)
        let claimed = try peekCount(imgPath)
        if claimed != lbl.n {
            throw AETError.data("\(lblPath): \(lbl.n) labels but \(imgPath) has \(claimed) images")
        }
        let img = try images(imgPath, limit: limit)
        if img.n == 0 { throw emptySplitError(imgPath, split) }
        if let expected = DatasetName(rawValue: name) {
            warnIfOtherDataset(expected: expected, file: split.imageFile, path: imgPath, sha256: img.sha256)
        }
        let keep = min(img.n, limit ?? img.n)
        let d = Dataset(name: name, count: keep, rows: img.rows, cols: img.cols, pixels: img.pixels, labels: lbl.labels)
        d.source = Dataset.Source(imagesPath: imgPath, imagesSHA256: img.sha256, labelsPath: lblPath, labelsSHA256: lbl.sha256)
        return d
    }

    public static func emptySplitError(_ path: String, _ split: Split) -> AETError {
        AETError.data("\(path): holds no images (the header says 0); the \(split.rawValue) split must not be empty")
    }

    /// Where warnings go; by default stderr, on the launcher's rank 0 only (every rank loads the data).
    nonisolated(unsafe) public static var warn: (String) -> Void = { msg in
        if Launcher.rank ?? 0 == 0 { printError(msg) }
    }
    nonisolated(unsafe) static var warned = Set<String>()

    /// Fashion-MNIST files under --dataset mnist (or the reverse) still load, with one warning per
    /// folder: the class names, the report and `fetch` would be the wrong dataset's. Unknown
    /// content of the right shape (KMNIST, EMNIST digits) is used silently.
    static func warnIfOtherDataset(expected: DatasetName, file: String, path: String, sha256: String) {
        guard let known = DatasetName.allCases.first(where: { $0.contentSHA256[file] == sha256 }), known != expected else { return }
        let dir = (path as NSString).deletingLastPathComponent
        guard !warned.contains(dir) else { return }
        warned.insert(dir)
        warn("warning: \(path) is \(known.rawValue) (its SHA-256 is that of the \(known.rawValue) file), but --dataset is \(expected.rawValue); class names and reports will be \(expected.rawValue)'s (pass --dataset \(known.rawValue))")
    }

    /// The image count a file's header claims (reads only the header).
    public static func peekCount(_ path: String) throws -> Int {
        let f = try GzFile(path)
        defer { f.close() }
        let header = try f.readExactly(16, what: "header")
        let magic = be32(header, 0)
        guard magic == 0x0000_0803 else {
            throw AETError.data("\(path): wrong magic number 0x\(String(magic, radix: 16)) (expected 0x803 for IDX images)")
        }
        return Int(be32(header, 4))
    }

    /// Returns (total count in file, rows, cols, pixels of the first min(count, limit) images).
    public static func readImages(_ path: String, limit: Int? = nil) throws -> (Int, Int, Int, [UInt8]) {
        let r = try images(path, limit: limit)
        return (r.n, r.rows, r.cols, r.pixels)
    }

    static func images(_ path: String, limit: Int?) throws -> (n: Int, rows: Int, cols: Int, pixels: [UInt8], sha256: String) {
        let f = try GzFile(path, hashing: true)
        defer { f.close() }
        let header = try f.readExactly(16, what: "header")
        let magic = be32(header, 0)
        guard magic == 0x0000_0803 else {
            throw AETError.data("\(path): wrong magic number 0x\(String(magic, radix: 16)) (expected 0x803 for IDX images)")
        }
        let n = Int(be32(header, 4)), rows = Int(be32(header, 8)), cols = Int(be32(header, 12))
        guard rows > 0, cols > 0, rows <= 4096, cols <= 4096, n <= maxCount else {
            throw AETError.data("\(path): implausible dimensions \(n)×\(rows)×\(cols)")
        }
        guard rows == 28, cols == 28 else {
            throw AETError.data("\(path): images are \(rows)×\(cols), expected 28×28")
        }
        let keep = max(0, min(n, limit ?? n))
        let dim = rows * cols
        let total = 16 + n * dim
        try f.checkClaim(total, what: "\(n) images", keepBytes: keep * dim)
        let pixels = try f.readGrowing(keep * dim, expectedTotal: total, offset: 16)
        try f.skipRest(expectedTotal: total, consumed: 16 + keep * dim)
        return (n, rows, cols, pixels, f.contentDigest())
    }

    public static func readLabels(_ path: String, limit: Int? = nil) throws -> (Int, [UInt8]) {
        let r = try labels(path, limit: limit)
        return (r.n, r.labels)
    }

    static func labels(_ path: String, limit: Int?) throws -> (n: Int, labels: [UInt8], sha256: String) {
        let f = try GzFile(path, hashing: true)
        defer { f.close() }
        let header = try f.readExactly(8, what: "header")
        let magic = be32(header, 0)
        guard magic == 0x0000_0801 else {
            throw AETError.data("\(path): wrong magic number 0x\(String(magic, radix: 16)) (expected 0x801 for IDX labels)")
        }
        let n = Int(be32(header, 4))
        guard n <= maxCount else { throw AETError.data("\(path): implausible label count \(n)") }
        let keep = max(0, min(n, limit ?? n))
        try f.checkClaim(8 + n, what: "\(n) labels", keepBytes: keep)
        let labels = try f.readGrowing(keep, expectedTotal: 8 + n, offset: 8)
        // Range-check every label, including those past the limit.
        try f.skipRest(expectedTotal: 8 + n, consumed: 8 + keep) { chunk in
            if let bad = chunk.first(where: { $0 > 9 }) { throw AETError.data("\(path): label \(bad) out of range 0...9") }
        }
        if let bad = labels.first(where: { $0 > 9 }) {
            throw AETError.data("\(path): label \(bad) out of range 0...9")
        }
        return (n, labels, f.contentDigest())
    }

    @inline(__always) static func be32(_ b: [UInt8], _ o: Int) -> UInt32 {
        UInt32(b[o]) << 24 | UInt32(b[o + 1]) << 16 | UInt32(b[o + 2]) << 8 | UInt32(b[o + 3])
    }
}

/// A zlib gzFile (reads gzip or, transparently, raw files) with errors that name the path. The
/// file is opened only if it is a regular file (see `InputFile`); with `hashing` every byte of the
/// decompressed content that is read also goes into a SHA-256.
final class GzFile {
    let path: String
    let handle: gzFile
    let gzipped: Bool
    /// The file's size on disk (compressed, for gzip).
    let fileSize: Int
    private var digest: SHA256Digest?

    init(_ path: String, hashing: Bool = false) throws {
        self.path = path
        let (fd, size) = try InputFile.open(path, what: "an IDX file")
        fileSize = size
        if size == 0 {
            Foundation.close(fd)
            throw AETError.data("\(path): empty file")
        }
        var head: [UInt8] = [0, 0]
        let got = pread(fd, &head, 2, 0)
        gzipped = got == 2 && head[0] == 0x1f && head[1] == 0x8b
        if path.hasSuffix(".gz") && !gzipped {
            Foundation.close(fd)
            throw AETError.data("\(path): not a gzip file (bad gzip magic bytes)")
        }
        guard let h = gzdopen(fd, "rb") else {  // takes over fd
            let e = errno
            Foundation.close(fd)
            throw AETError.data("\(path): cannot open: \(String(cString: strerror(e)))")
        }
        handle = h
        gzbuffer(handle, 1 << 17)
        if hashing { digest = SHA256Digest() }
    }

    func close() {
        gzclose(handle)
        if digest != nil { _ = contentDigest() }  // frees the hash context
    }

    /// SHA-256 (hex) of the content read so far; ends the hashing.
    func contentDigest() -> String {
        guard var d = digest else { return "" }
        digest = nil
        return d.finalizeHex()
    }

    /// The most content bytes this file can hold: its size when raw, 1032 times it for gzip.
    var maxContentBytes: Int { gzipped ? fileSize * IDX.maxDeflateRatio : fileSize }

    /// Checks a header's claim of `total` content bytes against the file's length (raw: exactly;
    /// gzip: what deflate could hold), and the `keepBytes` to be allocated against the memory.
    func checkClaim(_ total: Int, what: String, keepBytes: Int) throws {
        if !gzipped {
            if fileSize < total {
                throw AETError.data("\(path): truncated: \(fileSize) bytes of data, expected \(total) from the header")
            }
            if fileSize > total {
                throw AETError.data("\(path): longer than its header says (\(total) bytes): trailing data")
            }
        } else if total > maxContentBytes {
            throw AETError.data("\(path): truncated or corrupt: the header claims \(what) (\(total) bytes), more than a \(fileSize)-byte gzip file can hold")
        }
        if keepBytes > Memory.available / 2 {
            throw AETError.data("\(path): the header claims \(what), which needs \(Memory.format(Double(keepBytes))) of memory; only \(Memory.format(Double(Memory.available))) is available (use --train-limit/--test-limit)")
        }
    }

    private func rawRead(_ p: UnsafeMutableRawPointer, _ n: Int) -> Int32 {
        let got = gzread(handle, p, UInt32(n))
        if got > 0 { digest?.update(UnsafeRawPointer(p), Int(got)) }
        return got
    }

    private func errorText() -> String {
        var code: Int32 = 0
        var msg = gzerror(handle, &code).map { String(cString: $0) } ?? "read error"
        if msg.hasPrefix(path + ": ") { msg.removeFirst(path.count + 2) }  // zlib prefixes the path
        return msg.isEmpty ? "read error" : msg
    }

    /// Reads exactly `n` bytes or throws "truncated".
    func readExactly(_ n: Int, what: String) throws -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: n)
        let got = buf.withUnsafeMutableBytes { rawRead($0.baseAddress!, n) }
        if got < 0 { throw AETError.data("\(path): \(gzipped ? "corrupt gzip data" : "read error"): \(errorText())") }
        if Int(got) < n { throw AETError.data("\(path): truncated \(what) (\(got) of \(n) bytes)") }
        return buf
    }

    /// Reads `count` bytes into a new array that grows as data arrives (64 MiB first, then
    /// doubling), so a header that claims more than the stream holds fails at the real end
    /// having allocated about what was really there.
    func readGrowing(_ count: Int, expectedTotal: Int, offset: Int) throws -> [UInt8] {
        var out = [UInt8](repeating: 0, count: min(count, 1 << 26))
        var have = 0
        while true {
            try out.withUnsafeMutableBytes {
                try read(into: UnsafeMutableRawBufferPointer(rebasing: $0[have...]), expectedTotal: expectedTotal, offset: offset + have)
            }
            have = out.count
            if have == count { return out }
            // Grow by doubling (bulk copies, no per-element work).
            var bigger = [UInt8](repeating: 0, count: min(count, 2 * have))
            bigger.withUnsafeMutableBytes { dst in out.withUnsafeBytes { dst.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: have) } }
            out = bigger
        }
    }

    /// Fills `dst` completely; `expectedTotal` and `offset` only make the error message useful.
    func read(into dst: UnsafeMutableRawBufferPointer, expectedTotal: Int, offset: Int) throws {
        var done = 0
        while done < dst.count {
            let chunk = min(dst.count - done, 1 << 30)
            let got = rawRead(dst.baseAddress! + done, chunk)
            if got < 0 { throw AETError.data("\(path): \(gzipped ? "corrupt gzip data" : "read error"): \(errorText())") }
            if got == 0 {
                throw AETError.data("\(path): truncated: \(offset + done) bytes of data, expected \(expectedTotal) from the header")
            }
            done += Int(got)
        }
    }

    /// Reads and discards the rest, checking the length matches the header exactly.
    func skipRest(expectedTotal: Int, consumed: Int, inspect: (UnsafeRawBufferPointer) throws -> Void = { _ in }) throws {
        var remaining = expectedTotal - consumed
        var scratch = [UInt8](repeating: 0, count: 1 << 16)
        var pos = consumed
        while remaining > 0 {
            let want = min(remaining, scratch.count)
            let got = scratch.withUnsafeMutableBytes { rawRead($0.baseAddress!, want) }
            if got < 0 { throw AETError.data("\(path): \(gzipped ? "corrupt gzip data" : "read error"): \(errorText())") }
            if got == 0 {
                throw AETError.data("\(path): truncated: \(pos) bytes of data, expected \(expectedTotal) from the header")
            }
            try scratch.withUnsafeBytes { try inspect(UnsafeRawBufferPointer(rebasing: $0[0..<Int(got)])) }
            remaining -= Int(got)
            pos += Int(got)
        }
        let extra = scratch.withUnsafeMutableBytes { gzread(handle, $0.baseAddress, 1) }
        if extra < 0 { throw AETError.data("\(path): \(gzipped ? "corrupt gzip data" : "read error"): \(errorText())") }
        if extra > 0 { throw AETError.data("\(path): longer than its header says (\(expectedTotal) bytes): trailing data") }
        try checkCleanEnd()
    }

    /// Reads the whole remaining content into the digest (DataSource.contentDigest).
    func drain() throws {
        var buf = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let got = buf.withUnsafeMutableBytes { rawRead($0.baseAddress!, $0.count) }
            if got < 0 { throw AETError.data("\(path): corrupt gzip data") }
            if got == 0 { break }
        }
        try checkCleanEnd()
    }

    /// gzread returns 0 both at a clean end and when the gzip stream was cut short (e.g. inside
    /// its CRC/length trailer); only gzerror tells them apart (Z_BUF_ERROR).
    func checkCleanEnd() throws {
        var code: Int32 = Z_OK
        _ = gzerror(handle, &code)
        if code != Z_OK { throw AETError.data("\(path): truncated gzip stream (unexpected end of file)") }
    }
}

/// Converts a batch of UInt8 images, gathered by index, into Float in [0, 1] (or {0, 1}
/// with `binarize`), written straight into the model's input buffer.
public struct BatchLoader {
    public let data: Dataset
    public let binarize: Bool

    public init(_ data: Dataset, binarize: Bool) {
        self.data = data
        self.binarize = binarize
    }

    /// Gathers the images at `indices` into consecutive rows of `dst`.
    public func fill(_ dst: UnsafeMutablePointer<Float>, indices: UnsafeBufferPointer<Int32>) {
        let d = data.dim, b: Int32 = binarize ? 1 : 0
        data.withPixels { px in
            for (r, idx) in indices.enumerated() {
                aet_u8_to_float(px.baseAddress! + Int(idx) * d, dst + r * d, d, b)
            }
        }
    }

    /// Contiguous range [start, start+count).
    public func fill(_ dst: UnsafeMutablePointer<Float>, start: Int, count: Int) {
        let d = data.dim
        data.withPixels { px in
            aet_u8_to_float(px.baseAddress! + start * d, dst, count * d, binarize ? 1 : 0)
        }
    }
}
