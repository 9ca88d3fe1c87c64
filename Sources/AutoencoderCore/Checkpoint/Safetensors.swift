import CKernels
import Foundation

// safetensors (https://github.com/huggingface/safetensors), as PyTorch's `safetensors.torch.load_file`
// reads it:
//
//   [8 bytes] N, little-endian u64: length of the header
//   [N bytes] UTF-8 JSON object (may be padded with trailing spaces)
//             {"NAME": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//              "__metadata__": {"key": "value", ...}}      (metadata: strings only, optional)
//   [rest]    the byte buffer; offsets are relative to its start; little-endian, row-major.
//             Tensors cover it completely, without holes or overlaps.

/// One tensor entry of a safetensors header. `begin`/`end` are byte offsets into the data section.
public struct TensorInfo: Equatable, Sendable {
    public let name: String
    public let dtype: String
    public let shape: [Int]
    public let begin: Int
    public let end: Int

    public init(name: String, dtype: String, shape: [Int], begin: Int, end: Int) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.begin = begin
        self.end = end
    }

    /// Number of bytes of the tensor's data.
    public var byteCount: Int { end - begin }
    /// Number of elements (product of the shape; 1 for a 0-d tensor).
    public var elementCount: Int { shape.reduce(1, *) }
}

/// A decoded, fully validated safetensors file held in memory.
public struct SafetensorsFile {
    public let path: String
    public let metadata: [String: String]
    /// Sorted by data offset (ties, only possible with empty tensors, by name).
    public let tensors: [TensorInfo]

    /// The whole file; the data section starts at `dataStart` bytes from its first byte.
    private let storage: Data
    private let dataStart: Int
    private let index: [String: Int]

    fileprivate init(path: String, metadata: [String: String], tensors: [TensorInfo],
                     storage: Data, dataStart: Int) {
        self.path = path
        self.metadata = metadata
        self.tensors = tensors
        self.storage = storage
        self.dataStart = dataStart
        var index: [String: Int] = [:]
        for (i, t) in tensors.enumerated() { index[t.name] = i }
        self.index = index
    }

    public func tensor(_ name: String) -> TensorInfo? {
        index[name].map { tensors[$0] }
    }

    /// The raw little-endian bytes of any tensor.
    public func bytes(_ name: String) throws -> Data {
        let t = try lookup(name)
        let lo = storage.startIndex + dataStart + t.begin
        return Data(storage[lo ..< lo + t.byteCount])
    }

    /// F32 values of a tensor (throws AETError.data naming path and tensor if missing or not F32).
    public func floats(_ name: String) throws -> [Float] {
        let t = try f32(name)
        let n = t.byteCount / 4
        return [Float](unsafeUninitializedCapacity: n) { buf, initialized in
            copy(t, into: buf.baseAddress, count: n)
            initialized = n
        }
    }

    /// Copies an F32 tensor straight into memory; `count` must equal the tensor's element count.
    public func copyFloats(_ name: String, into: UnsafeMutablePointer<Float>, count: Int) throws {
        let t = try f32(name)
        let n = t.byteCount / 4
        guard n == count else {
            throw AETError.data("\(path): tensor \(Safetensors.quote(name)) has \(n) elements, expected \(count)")
        }
        copy(t, into: into, count: n)
    }

    /// Scans an F32 tensor: nil when every value is finite (and ≥ 0 with `nonNegative`), else
    /// what is wrong ("NaN or Inf", "negative").
    public func checkValues(_ name: String, nonNegative: Bool = false) throws -> String? {
        let t = try f32(name)
        let n = t.byteCount / 4
        var chunk = [Float](repeating: 0, count: min(n, 1 << 16))
        var i = 0
        while i < n {
            let m = min(chunk.count, n - i)
            let part = TensorInfo(name: t.name, dtype: t.dtype, shape: [m], begin: t.begin + 4 * i, end: t.begin + 4 * (i + m))
            let bad: String? = chunk.withUnsafeMutableBufferPointer { buf in
                copy(part, into: buf.baseAddress, count: m)
                if aet_all_finite(buf.baseAddress, m) == 0 { return "NaN or Inf" }
                if nonNegative && buf[0 ..< m].contains(where: { $0 < 0 }) { return "negative" }
                return nil
            }
            if let bad { return bad }
            i += m
        }
        return nil
    }

    private func lookup(_ name: String) throws -> TensorInfo {
        guard let t = tensor(name) else {
            throw AETError.data("\(path): missing tensor \(Safetensors.quote(name))")
        }
        return t
    }

    private func f32(_ name: String) throws -> TensorInfo {
        let t = try lookup(name)
        guard t.dtype == "F32" else {
            throw AETError.data("\(path): tensor \(Safetensors.quote(name)) has dtype \(t.dtype), expected F32")
        }
        return t
    }

    private func copy(_ t: TensorInfo, into dst: UnsafeMutablePointer<Float>?, count n: Int) {
        guard n > 0, let dst else { return }
        storage.withUnsafeBytes { raw in
            let src = raw.baseAddress! + dataStart + t.begin
            #if _endian(little)
            UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: n * 4)
            #else
            for i in 0 ..< n {
                dst[i] = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
            }
            #endif
        }
    }
}

public enum Safetensors {
    /// Metadata key holding the SHA-256 (lowercase hex) of the whole data section.
    public static let checksumKey = "data_sha256"
    /// Metadata key holding the SHA-256 (lowercase hex) of the whole file, computed with the 64
    /// hex digits of this value itself replaced by ASCII '0': it covers the length prefix, the
    /// header with every tensor entry and all metadata, and the data (checkpoint format 2).
    public static let fileChecksumKey = "file_sha256"
    static let zeroDigest = String(repeating: "0", count: 64)
    /// Largest header accepted on read (the reference implementation's limit).
    public static let maxHeaderBytes = 100_000_000

    /// Bytes per element of every dtype of the spec.
    public static let dtypeSizes: [String: Int] = [
        "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
        "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
        "I32": 4, "U32": 4, "F32": 4,
        "F64": 8, "I64": 8, "U64": 8,
    ]

    public typealias Tensor = (name: String, shape: [Int], data: UnsafeBufferPointer<Float>)

    // MARK: Writing

    /// Encodes F32 tensors, in the given order, contiguous, into one buffer of the exact final size.
    /// Adds `metadata[checksumKey]` = SHA-256 hex of the whole data section (overriding any given value),
    /// and with `fileChecksum` also `metadata[fileChecksumKey]`, the SHA-256 of the whole file.
    /// Programming errors trap: a duplicate or reserved name, a negative dimension, or a shape whose
    /// element count differs from `data.count`.
    public static func encode(tensors: [Tensor], metadata: [String: String], fileChecksum: Bool = false) -> Data {
        var dataBytes = 0
        var names = Set<String>()
        for t in tensors {
            precondition(t.name != "__metadata__", "safetensors: tensor name __metadata__ is reserved")
            precondition(names.insert(t.name).inserted, "safetensors: duplicate tensor name \(t.name)")
            precondition(t.shape.allSatisfy { $0 >= 0 }, "safetensors: negative dimension in \(t.name)")
            precondition(t.shape.reduce(1, *) == t.data.count,
                         "safetensors: shape \(t.shape) of \(t.name) does not match \(t.data.count) values")
            dataBytes += t.data.count * 4
        }

        var digest = SHA256Digest()
        for t in tensors { hashLittleEndian(t.data, into: &digest) }
        var meta = metadata
        meta[checksumKey] = digest.finalizeHex()
        meta[fileChecksumKey] = nil
        if fileChecksum { meta[fileChecksumKey] = zeroDigest }  // placeholder, patched below

        // Header JSON, written by hand so the key order is fixed: tensors in data order, then metadata.
        var json = "{"
        var offset = 0
        for (i, t) in tensors.enumerated() {
            if i > 0 { json += "," }
            let end = offset + t.data.count * 4
            json += jsonString(t.name)
            json += ":{\"dtype\":\"F32\",\"shape\":["
            json += t.shape.map(String.init).joined(separator: ",")
            json += "],\"data_offsets\":[\(offset),\(end)]}"
            offset = end
        }
        if !tensors.isEmpty { json += "," }
        json += "\"__metadata__\":{"
        json += meta.keys.sorted().map { jsonString($0) + ":" + jsonString(meta[$0]!) }.joined(separator: ",")
        json += "}}"
        var header = Array(json.utf8)
        // Pad with spaces so that the data section starts 8-byte aligned.
        while header.count % 8 != 0 { header.append(0x20) }

        let total = 8 + header.count + dataBytes
        var out = Data(capacity: total)
        withUnsafeBytes(of: UInt64(header.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: header)
        for t in tensors { appendLittleEndian(t.data, to: &out) }
        assert(out.count == total)
        if fileChecksum {
            // The placeholder is found exactly once (see `fileChecksumRange`); hash, then patch it.
            let range = fileChecksumRange(header, value: zeroDigest)!
            let hex = Array(SHA256Digest.hex(out).utf8)
            out.replaceSubrange((8 + range.lowerBound) ..< (8 + range.upperBound), with: hex)
        }
        return out
    }

    /// Where the 64 hex digits of `"file_sha256":"<value>"` sit in the header bytes; nil unless
    /// the key occurs exactly once. Inside a JSON string a quote is escaped, so tensor names and
    /// other metadata values cannot contain this byte sequence.
    static func fileChecksumRange<C: Collection>(_ header: C, value: String) -> Range<Int>? where C.Element == UInt8, C.Index == Int {
        let key = Array("\"\(fileChecksumKey)\":\"".utf8)
        let pattern = key + Array(value.utf8) + [UInt8(ascii: "\"")]
        let bytes = Array(header)
        var found: Range<Int>? = nil
        var i = 0
        while i + pattern.count <= bytes.count {
            if bytes[i] == pattern[0] && bytes[i ..< i + key.count].elementsEqual(key) {
                guard found == nil, bytes[i ..< i + pattern.count].elementsEqual(pattern) else { return nil }
                found = (i + key.count) ..< (i + key.count + 64)
            }
            i += 1
        }
        return found
    }

    /// Encodes and writes crash-safely (temp file, fsync, rename). Throws AETError.io on failure.
    public static func write(tensors: [Tensor], metadata: [String: String], to url: URL) throws {
        try AtomicFile.write(encode(tensors: tensors, metadata: metadata), to: url)
    }

    // MARK: Reading

    /// Reads and validates a file (see `decode`). Only a regular file is read (a directory, FIFO
    /// or device is an error naming it); an unreadable file is AETError.data.
    public static func read(_ url: URL, requireChecksum: Bool = false, what: String = "a safetensors file") throws -> SafetensorsFile {
        let data = try InputFile.readAll(url.path, what: what)
        return try decode(data, path: url.path, requireChecksum: requireChecksum)
    }

    /// Parses and validates everything; any defect is an AETError.data "PATH: cause".
    /// `requireChecksum` makes a missing `checksumKey` an error; a present one is always verified,
    /// and so is a present `fileChecksumKey`.
    public static func decode(_ data: Data, path: String, requireChecksum: Bool = false) throws -> SafetensorsFile {
        func fail(_ cause: String) -> AETError { AETError.data("\(path): \(cause)") }

        let fileSize = data.count
        guard fileSize >= 8 else {
            throw fail("not a safetensors file: \(fileSize) bytes, shorter than the 8-byte header length")
        }
        let n64: UInt64 = data.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard n64 > 0 else { throw fail("safetensors header length is 0") }
        guard n64 <= UInt64(maxHeaderBytes) else {
            throw fail("safetensors header length \(n64) exceeds the \(maxHeaderBytes)-byte limit")
        }
        guard n64 <= UInt64(fileSize - 8) else {
            throw fail("safetensors header length \(n64) extends beyond the end of the file (\(fileSize) bytes)")
        }
        let headerLen = Int(n64)
        let dataStart = 8 + headerLen
        let dataLen = fileSize - dataStart

        let headerBytes = data.subdata(in: data.startIndex + 8 ..< data.startIndex + dataStart)
        guard String(validating: headerBytes, as: UTF8.self) != nil else {
            throw fail("safetensors header is not valid UTF-8")
        }
        // A raw NUL cannot occur in UTF-8 JSON text; rejecting it also stops JSONSerialization from
        // guessing UTF-16/32.
        guard headerBytes.first == UInt8(ascii: "{"), !headerBytes.contains(0) else {
            throw fail("safetensors header is not a JSON object")
        }
        let root: Any
        do {
            root = try JSONSerialization.jsonObject(with: headerBytes)
        } catch {
            throw fail("safetensors header is not valid JSON")
        }
        guard let object = root as? [String: Any] else {
            throw fail("safetensors header is not a JSON object")
        }

        var metadata: [String: String] = [:]
        if let m = object["__metadata__"] {
            guard let dict = m as? [String: Any] else {
                throw fail("safetensors __metadata__ is not a string-to-string map")
            }
            for (k, v) in dict {
                guard let s = v as? String else {
                    throw fail("safetensors __metadata__ value for \(quote(k)) is not a string")
                }
                metadata[k] = s
            }
        }

        var tensors: [TensorInfo] = []
        tensors.reserveCapacity(object.count)
        for (name, value) in object where name != "__metadata__" {
            let q = quote(name)
            guard let entry = value as? [String: Any] else { throw fail("tensor \(q): entry is not a JSON object") }
            guard let dtypeValue = entry["dtype"] else { throw fail("tensor \(q): missing dtype") }
            guard let dtype = dtypeValue as? String else { throw fail("tensor \(q): dtype is not a string") }
            guard let shapeValue = entry["shape"] else { throw fail("tensor \(q): missing shape") }
            guard let shapeArray = shapeValue as? [Any] else { throw fail("tensor \(q): shape is not an array") }
            guard let offsetsValue = entry["data_offsets"] else { throw fail("tensor \(q): missing data_offsets") }
            guard let offsetsArray = offsetsValue as? [Any], offsetsArray.count == 2 else {
                throw fail("tensor \(q): data_offsets is not an array of two integers")
            }
            guard let elementSize = dtypeSizes[dtype] else {
                throw fail("tensor \(q): unknown dtype \(quote(dtype))")
            }
            var shape: [Int] = []
            shape.reserveCapacity(shapeArray.count)
            for d in shapeArray {
                guard let v = jsonInteger(d) else { throw fail("tensor \(q): shape entries must be integers") }
                guard v >= 0 else { throw fail("tensor \(q): negative dimension \(v) in shape") }
                shape.append(v)
            }
            guard let begin = jsonInteger(offsetsArray[0]), let end = jsonInteger(offsetsArray[1]) else {
                throw fail("tensor \(q): data_offsets must be integers")
            }
            guard begin >= 0, end >= 0 else { throw fail("tensor \(q): negative data offset") }
            guard end >= begin else { throw fail("tensor \(q): data_offsets end \(end) < begin \(begin)") }
            guard end <= dataLen else {
                throw fail("tensor \(q): data_offsets [\(begin), \(end)] beyond the data section (\(dataLen) bytes)")
            }
            // Overflow-safe byte size; any zero dimension makes the tensor empty.
            var expected = shape.contains(0) ? 0 : elementSize
            if expected != 0 {
                for d in shape {
                    let (p, overflow) = expected.multipliedReportingOverflow(by: d)
                    guard !overflow else { throw fail("tensor \(q): shape \(shape) is too large") }
                    expected = p
                }
            }
            guard end - begin == expected else {
                throw fail("tensor \(q): data_offsets span \(end - begin) bytes but \(dtype) shape \(shape) needs \(expected)")
            }
            tensors.append(TensorInfo(name: name, dtype: dtype, shape: shape, begin: begin, end: end))
        }

        tensors.sort { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }
        var cursor = 0
        for t in tensors {
            if t.begin < cursor {
                throw fail("tensor \(quote(t.name)): data_offsets [\(t.begin), \(t.end)] overlap another tensor")
            }
            if t.begin > cursor {
                throw fail("data section has a hole at bytes [\(cursor), \(t.begin)) before tensor \(quote(t.name))")
            }
            cursor = t.end
        }
        if cursor != dataLen {
            throw fail("data section has \(dataLen - cursor) trailing bytes not covered by any tensor")
        }

        if let want = metadata[checksumKey] {
            let got = data.withUnsafeBytes { raw in
                SHA256Digest.hex(UnsafeRawBufferPointer(rebasing: raw[dataStart ..< fileSize]))
            }
            guard got == want.lowercased() else { throw fail("checksum mismatch (file is corrupt)") }
        } else if requireChecksum {
            throw fail("missing \(checksumKey) checksum in __metadata__")
        }
        if let want = metadata[fileChecksumKey] {
            // Lowercase hex exactly as written: every byte of the file is significant.
            let hex = want
            guard hex.utf8.count == 64, hex.utf8.allSatisfy({ (48...57).contains($0) || (97...102).contains($0) }),
                  let range = fileChecksumRange(headerBytes, value: want) else {
                throw fail("malformed \(fileChecksumKey) in the header")
            }
            var d = SHA256Digest()
            data.withUnsafeBytes { raw in
                d.update(raw.baseAddress!, 8 + range.lowerBound)
                d.update(Data(zeroDigest.utf8))
                d.update(raw.baseAddress! + 8 + range.upperBound, fileSize - 8 - range.upperBound)
            }
            guard d.finalizeHex() == hex else { throw fail("file checksum mismatch: the header, metadata or data is corrupt") }
        }

        return SafetensorsFile(path: path, metadata: metadata, tensors: tensors, storage: data, dataStart: dataStart)
    }

    // MARK: Helpers

    /// A JSON integer, not a boolean and not a number with a fraction or exponent form (2.0, 1e2).
    static func jsonInteger(_ v: Any) -> Int? {
        guard let n = v as? NSNumber else { return nil }
        switch String(cString: n.objCType) {
        case "i", "q", "l", "s", "I", "L", "S", "Q":
            return v as? Int
        default:
            return nil  // "c" = boolean, "d"/"f" = floating point
        }
    }

    /// A JSON string literal with everything the grammar requires escaped.
    static func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20:
                out += String(format: "\\u%04x", u.value)
            default:
                out.unicodeScalars.append(u)
            }
        }
        out += "\""
        return out
    }

    /// A name for an error message: quoted, control characters escaped, so the message stays one line.
    static func quote(_ s: String) -> String {
        var out = "'"
        for u in s.unicodeScalars {
            if u.value < 0x20 || u.value == 0x7f {
                out += String(format: "\\x%02x", u.value)
            } else {
                out.unicodeScalars.append(u)
            }
        }
        return out + "'"
    }

    static func oneLine(_ s: String) -> String {
        s.split(whereSeparator: \.isNewline).joined(separator: " ")
    }

    static func hashLittleEndian(_ p: UnsafeBufferPointer<Float>, into d: inout SHA256Digest) {
        guard let base = p.baseAddress, p.count > 0 else { return }
        #if _endian(little)
        d.update(UnsafeRawPointer(base), p.count * 4)
        #else
        var chunk = [UInt32](repeating: 0, count: 4096)
        var i = 0
        while i < p.count {
            let m = min(chunk.count, p.count - i)
            for j in 0 ..< m { chunk[j] = base[i + j].bitPattern.littleEndian }
            chunk.withUnsafeBytes { d.update($0.baseAddress!, m * 4) }
            i += m
        }
        #endif
    }

    static func appendLittleEndian(_ p: UnsafeBufferPointer<Float>, to out: inout Data) {
        guard p.baseAddress != nil, p.count > 0 else { return }
        #if _endian(little)
        out.append(p)
        #else
        for v in p { withUnsafeBytes(of: v.bitPattern.littleEndian) { out.append(contentsOf: $0) } }
        #endif
    }
}
