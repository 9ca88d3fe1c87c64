import Foundation

// NumPy .npy (https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html):
//   "\x93NUMPY", major, minor, header length (u16 LE in 1.0; u32 LE in 2.0/3.0),
//   header = Python dict literal {'descr': ..., 'fortran_order': ..., 'shape': (...), }
//   padded with spaces and terminated by '\n' so that the preamble is a multiple of 64 bytes,
//   then the raw array data.

public enum NPY {
    static let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]  // \x93NUMPY
    /// Largest header accepted on read (numpy's own default limit is 10 000 bytes).
    static let maxHeaderBytes = 1 << 20

    // MARK: Writing

    /// Version 1.0 file of little-endian float32 ('<f4'), C order. `shape`'s product must equal `floats.count`.
    public static func encode(floats: UnsafeBufferPointer<Float>, shape: [Int]) -> Data {
        checkShape(shape, count: floats.count)
        var out = preamble(descr: "<f4", shape: shape, payloadBytes: floats.count * 4)
        Safetensors.appendLittleEndian(floats, to: &out)
        return out
    }

    /// Version 1.0 file of uint8 ('|u1'), C order. `shape`'s product must equal `uint8.count`.
    public static func encode(uint8: [UInt8], shape: [Int]) -> Data {
        checkShape(shape, count: uint8.count)
        var out = preamble(descr: "|u1", shape: shape, payloadBytes: uint8.count)
        out.append(contentsOf: uint8)
        return out
    }

    /// Writes atomically (see `AtomicFile`; `special` says what a device or FIFO path gets).
    public static func write(floats: UnsafeBufferPointer<Float>, shape: [Int], to url: URL,
                             special: AtomicFile.Special = .refuse) throws {
        try AtomicFile.write(encode(floats: floats, shape: shape), to: url, special: special)
    }

    public static func write(uint8: [UInt8], shape: [Int], to url: URL, special: AtomicFile.Special = .refuse) throws {
        try AtomicFile.write(encode(uint8: uint8, shape: shape), to: url, special: special)
    }

    /// Streams a float32 array of `shape` to `url` one row (shape[1...] values) at a time:
    /// `row(i, buffer)` fills row i. Memory stays one row, whatever shape[0] is.
    public static func writeRows(shape: [Int], to url: URL, special: AtomicFile.Special = .refuse,
                                 row: (Int, UnsafeMutableBufferPointer<Float>) -> Void) throws {
        precondition(!shape.isEmpty && shape.allSatisfy { $0 >= 0 }, "npy: bad shape \(shape)")
        let rowCount = shape.dropFirst().reduce(1, *)
        let head = preamble(descr: "<f4", shape: shape, payloadBytes: 0)
        var buf = [Float](repeating: 0, count: max(rowCount, 1))
        try AtomicFile.write(to: url, special: special) { fd in
            var err = head.withUnsafeBytes { AtomicFile.writeAll(fd, $0) }
            var i = 0
            while err == 0 && i < shape[0] {
                err = buf.withUnsafeMutableBufferPointer { b -> Int32 in
                    row(i, UnsafeMutableBufferPointer(rebasing: b[0 ..< rowCount]))
                    #if _endian(big)
                    for k in 0 ..< rowCount { b[k] = Float(bitPattern: b[k].bitPattern.littleEndian) }
                    #endif
                    return AtomicFile.writeAll(fd, UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: b[0 ..< rowCount])))
                }
                i += 1
            }
            return err
        }
    }

    private static func checkShape(_ shape: [Int], count: Int) {
        precondition(shape.allSatisfy { $0 >= 0 }, "npy: negative dimension in \(shape)")
        precondition(shape.reduce(1, *) == count, "npy: shape \(shape) does not match \(count) values")
    }

    /// Magic, version 1.0, header; returns a Data with capacity for the payload too.
    private static func preamble(descr: String, shape: [Int], payloadBytes: Int) -> Data {
        let dims: String
        switch shape.count {
        case 0: dims = "()"
        case 1: dims = "(\(shape[0]),)"
        default: dims = "(" + shape.map(String.init).joined(separator: ", ") + ")"
        }
        var header = Array("{'descr': '\(descr)', 'fortran_order': False, 'shape': \(dims), }".utf8)
        let unpadded = magic.count + 2 + 2 + header.count + 1
        header += [UInt8](repeating: 0x20, count: (64 - unpadded % 64) % 64)
        header.append(0x0A)
        precondition(header.count <= Int(UInt16.max), "npy: header too long for format 1.0")

        var out = Data(capacity: magic.count + 4 + header.count + payloadBytes)
        out.append(contentsOf: magic)
        out.append(contentsOf: [1, 0])
        withUnsafeBytes(of: UInt16(header.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: header)
        return out
    }

    // MARK: Reading

    public typealias Contents = (descr: String, shape: [Int], fortranOrder: Bool, payload: Data)

    /// Reads a .npy file (format 1.0, 2.0 or 3.0) and validates it; errors are AETError.data "PATH: cause".
    public static func read(_ url: URL) throws -> Contents {
        let data = try InputFile.readAll(url.path, what: "a .npy file")
        return try decode(data, path: url.path)
    }

    /// Parses the header itself (no Python evaluation): a dict with exactly the keys 'descr' (a simple
    /// type string such as '<f4'), 'fortran_order' (True/False) and 'shape' (a tuple of non-negative
    /// integers). The payload must be exactly product(shape) * itemsize bytes.
    public static func decode(_ data: Data, path: String) throws -> Contents {
        func fail(_ cause: String) -> AETError { AETError.data("\(path): \(cause)") }
        let fileSize = data.count
        let bytes = [UInt8](data.prefix(12))  // the preamble; the header is copied below, the payload once
        guard bytes.count >= 10, bytes[0 ..< 6].elementsEqual(magic) else {
            throw fail("not a .npy file (bad magic)")
        }
        let major = bytes[6], minor = bytes[7]
        let headerLen: Int, start: Int
        switch (major, minor) {
        case (1, 0):
            headerLen = Int(bytes[8]) | Int(bytes[9]) << 8
            start = 10
        case (2, 0), (3, 0):
            guard fileSize >= 12 else { throw fail(".npy file truncated in the preamble") }
            headerLen = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            start = 12
        default:
            throw fail("unsupported .npy format version \(major).\(minor)")
        }
        guard headerLen <= maxHeaderBytes else { throw fail(".npy header length \(headerLen) is too large") }
        guard headerLen <= fileSize - start else {
            throw fail(".npy header length \(headerLen) extends beyond the end of the file (\(fileSize) bytes)")
        }
        let headerBytes = [UInt8](data[data.startIndex + start ..< data.startIndex + start + headerLen])
        let text: String
        if major == 3 {
            guard let s = String(validating: headerBytes, as: UTF8.self) else {
                throw fail(".npy header is not valid UTF-8")
            }
            text = s
        } else {
            text = String(headerBytes.map { Character(Unicode.Scalar($0)) })  // latin-1
        }

        var parser = HeaderParser(scalars: Array(text.unicodeScalars))
        let dict: [String: HeaderParser.Value]
        do {
            dict = try parser.parseHeader()
        } catch let e as HeaderParser.Failure {
            throw fail(".npy header: \(e.message)")
        }
        guard Set(dict.keys) == ["descr", "fortran_order", "shape"] else {
            throw fail(".npy header must have exactly the keys 'descr', 'fortran_order', 'shape'")
        }
        guard case .string(let descr)? = dict["descr"] else { throw fail(".npy header: 'descr' is not a string") }
        guard case .bool(let fortranOrder)? = dict["fortran_order"] else {
            throw fail(".npy header: 'fortran_order' is not True or False")
        }
        guard case .tuple(let shape)? = dict["shape"] else {
            throw fail(".npy header: 'shape' is not a tuple of integers")
        }
        guard let itemSize = itemSize(descr) else {
            throw fail(".npy header: unsupported descr \(Safetensors.quote(descr))")
        }
        var expected = shape.contains(0) ? 0 : itemSize
        if expected != 0 {
            for d in shape {
                let (p, overflow) = expected.multipliedReportingOverflow(by: d)
                guard !overflow else { throw fail(".npy shape \(shape) is too large") }
                expected = p
            }
        }
        let payloadStart = start + headerLen
        let have = fileSize - payloadStart
        guard have == expected else {
            throw fail(".npy payload has \(have) bytes but \(descr) shape \(shape) needs \(expected)")
        }
        return (descr, shape, fortranOrder, data.subdata(in: data.startIndex + payloadStart ..< data.endIndex))
    }

    /// Bytes per element of a simple dtype string like '<f4', '|u1', '>i8', '|b1', '<U3', '<M8[ns]'.
    static func itemSize(_ descr: String) -> Int? {
        var s = Substring(descr)
        if let f = s.first, "<>|=".contains(f) { s = s.dropFirst() }
        if s.hasSuffix("]"), let open = s.firstIndex(of: "[") {  // datetime unit
            s = s[..<open]
        }
        guard let kind = s.first, s.count >= 2 else { return nil }
        let digits = s.dropFirst()
        guard digits.allSatisfy({ $0.isASCII && $0.isNumber }), let n = Int(digits), n > 0, n <= 1 << 20 else {
            return nil
        }
        switch kind {
        case "b": return n == 1 ? 1 : nil
        case "i", "u": return [1, 2, 4, 8].contains(n) ? n : nil
        case "f": return [2, 4, 8, 16].contains(n) ? n : nil
        case "c": return [8, 16, 32].contains(n) ? n : nil
        case "M", "m": return n == 8 ? 8 : nil
        case "S", "V": return n
        case "U": return n * 4
        default: return nil
        }
    }
}

/// Parser for the restricted Python literal of a .npy header: a dict of string keys whose values are
/// strings, True/False, or tuples of non-negative integers. No recursion, so no depth issues.
struct HeaderParser {
    enum Value: Equatable { case string(String), bool(Bool), tuple([Int]) }
    struct Failure: Error { let message: String }

    let scalars: [Unicode.Scalar]
    var i = 0

    init(scalars: [Unicode.Scalar]) { self.scalars = scalars }

    mutating func parseHeader() throws -> [String: Value] {
        skipSpace()
        try expect("{")
        var dict: [String: Value] = [:]
        while true {
            skipSpace()
            if peek == "}" { i += 1; break }
            let key = try parseString()
            skipSpace()
            try expect(":")
            skipSpace()
            let value = try parseValue()
            guard dict.updateValue(value, forKey: key) == nil else {
                throw Failure(message: "duplicate key \(Safetensors.quote(key))")
            }
            skipSpace()
            if peek == "," { i += 1; continue }
            skipSpace()
            try expect("}")
            break
        }
        skipSpace()
        guard i == scalars.count else { throw Failure(message: "unexpected text after the dict") }
        return dict
    }

    private var peek: Unicode.Scalar? { i < scalars.count ? scalars[i] : nil }

    private mutating func skipSpace() {
        while let c = peek, c == " " || c == "\n" || c == "\t" || c == "\r" { i += 1 }
    }

    private mutating func expect(_ c: Unicode.Scalar) throws {
        guard peek == c else { throw Failure(message: "expected '\(c)' at offset \(i)") }
        i += 1
    }

    private mutating func parseValue() throws -> Value {
        switch peek {
        case "'", "\"": return .string(try parseString())
        case "(": return .tuple(try parseTuple())
        default:
            for (word, v) in [("True", true), ("False", false)] {
                let w = Array(word.unicodeScalars)
                if i + w.count <= scalars.count, Array(scalars[i ..< i + w.count]) == w {
                    i += w.count
                    return .bool(v)
                }
            }
            throw Failure(message: "unsupported value at offset \(i)")
        }
    }

    /// A quoted string without escapes (numpy never writes escapes in these headers).
    private mutating func parseString() throws -> String {
        guard let q = peek, q == "'" || q == "\"" else { throw Failure(message: "expected a string at offset \(i)") }
        i += 1
        var s = String.UnicodeScalarView()
        while let c = peek, c != q {
            guard c != "\\", c != "\n" else { throw Failure(message: "unsupported string escape at offset \(i)") }
            s.append(c)
            i += 1
        }
        try expect(q)
        return String(s)
    }

    private mutating func parseTuple() throws -> [Int] {
        try expect("(")
        var items: [Int] = []
        var trailingComma = false
        while true {
            skipSpace()
            if peek == ")" { i += 1; break }
            items.append(try parseInt())
            skipSpace()
            trailingComma = peek == ","
            if trailingComma { i += 1; continue }
            try expect(")")
            break
        }
        // A one-element tuple needs its trailing comma in Python; "(3)" is an int, not a shape.
        guard items.count != 1 || trailingComma else { throw Failure(message: "'shape' is not a tuple") }
        return items
    }

    private mutating func parseInt() throws -> Int {
        var v = 0
        let start = i
        while let c = peek, ("0" ... "9").contains(c) {
            let (m, o1) = v.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(Int(c.value - 48))
            guard !o1, !o2 else { throw Failure(message: "integer too large at offset \(start)") }
            v = a
            i += 1
        }
        if peek == "L" { i += 1 }  // Python 2 long suffix
        guard i > start else { throw Failure(message: "expected a non-negative integer at offset \(i)") }
        return v
    }
}
