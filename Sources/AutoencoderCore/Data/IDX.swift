import CKernels
import CZlib
import Foundation

/// A split of an IDX image set with its labels. Pixels stay UInt8 in memory (47 MB for the
/// 60,000 training images); batches are converted to Float on the fly.
public final class Dataset {
    public let name: String
    public let count: Int
    public let rows: Int
    public let cols: Int
    public let pixels: [UInt8]
    public let labels: [UInt8]
    public var dim: Int { rows * cols }

    public init(name: String, count: Int, rows: Int, cols: Int, pixels: [UInt8], labels: [UInt8]) {
        self.name = name
        self.count = count
        self.rows = rows
        self.cols = cols
        self.pixels = pixels
        self.labels = labels
    }

    /// Keeps only the samples whose label passes `keep` (anomaly detection trains on one class).
    public func filtered(_ keep: (UInt8) -> Bool) -> Dataset {
        var px: [UInt8] = []
        var lb: [UInt8] = []
        for i in 0..<count where keep(labels[i]) {
            px.append(contentsOf: pixels[(i * dim)..<((i + 1) * dim)])
            lb.append(labels[i])
        }
        return Dataset(name: name, count: lb.count, rows: rows, cols: cols, pixels: px, labels: lb)
    }
}

public enum Split: String, Codable, CaseIterable, Sendable {
    case train, test
    var imageFile: String { self == .train ? "train-images-idx3-ubyte" : "t10k-images-idx3-ubyte" }
    var labelFile: String { self == .train ? "train-labels-idx1-ubyte" : "t10k-labels-idx1-ubyte" }
}

/// Reader for the IDX format (raw or gzip through zlib), with validation of the magic number,
/// the dimensions, the file length and the image/label counts. Every failure is one line that
/// names the file and the cause.
public enum IDX {
    /// The file for `base` in `dir`: `base.gz` when present, else `base`.
    public static func locate(_ base: String, in dir: String) throws -> String {
        let fm = FileManager.default
        for name in [base + ".gz", base] {
            let p = (dir as NSString).appendingPathComponent(name)
            if fm.fileExists(atPath: p) { return p }
        }
        throw AETError.data("\((dir as NSString).appendingPathComponent(base + ".gz")): file not found (nor \(base))")
    }

    /// Loads a split from a directory holding the standard four files.
    public static func load(dir: String, split: Split, limit: Int? = nil, name: String = "") throws -> Dataset {
        let imgPath = try locate(split.imageFile, in: dir)
        let lblPath = try locate(split.labelFile, in: dir)
        let (n, rows, cols, pixels) = try readImages(imgPath, limit: limit)
        let (nl, labels) = try readLabels(lblPath, limit: limit)
        if n != nl {
            throw AETError.data("\(lblPath): \(nl) labels but \(imgPath) has \(n) images")
        }
        let keep = min(n, limit ?? n)
        return Dataset(name: name, count: keep, rows: rows, cols: cols, pixels: pixels, labels: labels)
    }

    /// Returns (total count in file, rows, cols, pixels of the first min(count, limit) images).
    public static func readImages(_ path: String, limit: Int? = nil) throws -> (Int, Int, Int, [UInt8]) {
        let f = try GzFile(path)
        defer { f.close() }
        let header = try f.readExactly(16, what: "header")
        let magic = be32(header, 0)
        guard magic == 0x0000_0803 else {
            throw AETError.data("\(path): wrong magic number 0x\(String(magic, radix: 16)) (expected 0x803 for IDX images)")
        }
        let n = Int(be32(header, 4)), rows = Int(be32(header, 8)), cols = Int(be32(header, 12))
        guard rows > 0, cols > 0, rows <= 4096, cols <= 4096, n <= 100_000_000 else {
            throw AETError.data("\(path): implausible dimensions \(n)×\(rows)×\(cols)")
        }
        guard rows == 28, cols == 28 else {
            throw AETError.data("\(path): images are \(rows)×\(cols), expected 28×28")
        }
        let keep = max(0, min(n, limit ?? n))
        let dim = rows * cols
        var pixels = [UInt8](repeating: 0, count: keep * dim)
        try pixels.withUnsafeMutableBytes { try f.read(into: $0, expectedTotal: 16 + n * dim, offset: 16) }
        try f.skipRest(expectedTotal: 16 + n * dim, consumed: 16 + keep * dim)
        return (n, rows, cols, pixels)
    }

    public static func readLabels(_ path: String, limit: Int? = nil) throws -> (Int, [UInt8]) {
        let f = try GzFile(path)
        defer { f.close() }
        let header = try f.readExactly(8, what: "header")
        let magic = be32(header, 0)
        guard magic == 0x0000_0801 else {
            throw AETError.data("\(path): wrong magic number 0x\(String(magic, radix: 16)) (expected 0x801 for IDX labels)")
        }
        let n = Int(be32(header, 4))
        guard n <= 100_000_000 else { throw AETError.data("\(path): implausible label count \(n)") }
        let keep = max(0, min(n, limit ?? n))
        var labels = [UInt8](repeating: 0, count: keep)
        try labels.withUnsafeMutableBytes { try f.read(into: $0, expectedTotal: 8 + n, offset: 8) }
        // Range-check every label, including those past the limit.
        try f.skipRest(expectedTotal: 8 + n, consumed: 8 + keep) { chunk in
            if let bad = chunk.first(where: { $0 > 9 }) { throw AETError.data("\(path): label \(bad) out of range 0...9") }
        }
        if let bad = labels.first(where: { $0 > 9 }) {
            throw AETError.data("\(path): label \(bad) out of range 0...9")
        }
        return (n, labels)
    }

    @inline(__always) static func be32(_ b: [UInt8], _ o: Int) -> UInt32 {
        UInt32(b[o]) << 24 | UInt32(b[o + 1]) << 16 | UInt32(b[o + 2]) << 8 | UInt32(b[o + 3])
    }
}

/// A zlib gzFile (reads gzip or, transparently, raw files) with errors that name the path.
final class GzFile {
    let path: String
    let handle: gzFile
    let gzipped: Bool

    init(_ path: String) throws {
        self.path = path
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw AETError.data("\(path): file not found")
        }
        if isDir.boolValue { throw AETError.data("\(path): is a directory, expected a file") }
        guard let fh = FileHandle(forReadingAtPath: path) else {
            throw AETError.data("\(path): cannot open: \(String(cString: strerror(errno)))")
        }
        let head = fh.readData(ofLength: 2)
        try? fh.close()
        if head.isEmpty { throw AETError.data("\(path): empty file") }
        gzipped = head.count == 2 && head[head.startIndex] == 0x1f && head[head.startIndex + 1] == 0x8b
        if path.hasSuffix(".gz") && !gzipped {
            throw AETError.data("\(path): not a gzip file (bad gzip magic bytes)")
        }
        guard let h = gzopen(path, "rb") else {
            throw AETError.data("\(path): cannot open: \(String(cString: strerror(errno)))")
        }
        handle = h
        gzbuffer(handle, 1 << 17)
    }

    func close() { gzclose(handle) }

    private func errorText() -> String {
        var code: Int32 = 0
        var msg = gzerror(handle, &code).map { String(cString: $0) } ?? "read error"
        if msg.hasPrefix(path + ": ") { msg.removeFirst(path.count + 2) }  // zlib prefixes the path
        return msg.isEmpty ? "read error" : msg
    }

    /// Reads exactly `n` bytes or throws "truncated".
    func readExactly(_ n: Int, what: String) throws -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: n)
        let got = buf.withUnsafeMutableBytes { gzread(handle, $0.baseAddress, UInt32(n)) }
        if got < 0 { throw AETError.data("\(path): \(gzipped ? "corrupt gzip data" : "read error"): \(errorText())") }
        if Int(got) < n { throw AETError.data("\(path): truncated \(what) (\(got) of \(n) bytes)") }
        return buf
    }

    /// Fills `dst` completely; `expectedTotal` and `offset` only make the error message useful.
    func read(into dst: UnsafeMutableRawBufferPointer, expectedTotal: Int, offset: Int) throws {
        var done = 0
        while done < dst.count {
            let chunk = min(dst.count - done, 1 << 30)
            let got = gzread(handle, dst.baseAddress! + done, UInt32(chunk))
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
            let got = scratch.withUnsafeMutableBytes { gzread(handle, $0.baseAddress, UInt32(want)) }
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
        data.pixels.withUnsafeBufferPointer { px in
            for (r, idx) in indices.enumerated() {
                aet_u8_to_float(px.baseAddress! + Int(idx) * d, dst + r * d, d, b)
            }
        }
    }

    /// Contiguous range [start, start+count).
    public func fill(_ dst: UnsafeMutablePointer<Float>, start: Int, count: Int) {
        let d = data.dim
        data.pixels.withUnsafeBufferPointer { px in
            aet_u8_to_float(px.baseAddress! + start * d, dst, count * d, binarize ? 1 : 0)
        }
    }
}
