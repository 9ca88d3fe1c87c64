import Foundation

/// Turns an `Encodable` value into the Foundation objects `JSONSerialization` writes
/// (`[String: Any]`, `[Any]`, `String`, `Int`, `Double`, `Bool`, `NSNull`). The typed output
/// contracts (summary.json, metrics.jsonl) go through it and then through `JSON.encode`, the same
/// serializer, options and number formatting as every other JSON aetrain writes; non-finite
/// numbers stay Doubles here and become `null` there.
public enum JSONObjectEncoder {
    public static func object(_ value: some Encodable) throws -> Any {
        let root = Node()
        try value.encode(to: NodeEncoder(node: root, codingPath: []))
        return root.resolved()
    }

    /// A value under construction: a scalar, or a keyed or unkeyed container of nodes.
    fileprivate final class Node {
        var scalar: Any?
        var keyed: [String: Node]?
        var unkeyed: [Node]?

        init(_ scalar: Any? = nil) { self.scalar = scalar }

        func resolved() -> Any {
            if let keyed { return keyed.mapValues { $0.resolved() } }
            if let unkeyed { return unkeyed.map { $0.resolved() } }
            return scalar ?? NSNull()
        }
    }

    fileprivate struct NodeEncoder: Encoder {
        let node: Node
        let codingPath: [CodingKey]
        var userInfo: [CodingUserInfoKey: Any] { [:] }

        func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
            if node.keyed == nil { node.keyed = [:] }
            return KeyedEncodingContainer(Keyed<Key>(node: node, codingPath: codingPath))
        }

        func unkeyedContainer() -> UnkeyedEncodingContainer {
            if node.unkeyed == nil { node.unkeyed = [] }
            return Unkeyed(node: node, codingPath: codingPath)
        }

        func singleValueContainer() -> SingleValueEncodingContainer { Single(node: node, codingPath: codingPath) }
    }

    /// The scalar a value stands for: Floats as Doubles (as `JSON.encode` treats them), other
    /// integers as Int when they fit.
    fileprivate static func scalar(_ v: Any) -> Any {
        switch v {
        case let f as Float: return Double(f)
        case let i as Int8: return Int(i)
        case let i as Int16: return Int(i)
        case let i as Int32: return Int(i)
        case let i as Int64: return Int(i)
        case let u as UInt8: return Int(u)
        case let u as UInt16: return Int(u)
        case let u as UInt32: return Int(u)
        case let u as UInt: return u <= UInt(Int.max) ? Int(u) : v
        case let u as UInt64: return u <= UInt64(Int.max) ? Int(u) : v
        default: return v
        }
    }

    fileprivate static func child(_ value: some Encodable, codingPath: [CodingKey]) throws -> Node {
        switch value {
        case let v as Double: return Node(v)
        case let v as Int: return Node(v)
        case let v as String: return Node(v)
        case let v as Bool: return Node(v)
        case let v as Float: return Node(Double(v))
        default:
            let n = Node()
            try value.encode(to: NodeEncoder(node: n, codingPath: codingPath))
            return n
        }
    }

    fileprivate struct Keyed<Key: CodingKey>: KeyedEncodingContainerProtocol {
        let node: Node
        let codingPath: [CodingKey]

        mutating func encodeNil(forKey key: Key) throws { node.keyed![key.stringValue] = Node(NSNull()) }
        mutating func encode(_ value: Bool, forKey key: Key) throws { node.keyed![key.stringValue] = Node(value) }
        mutating func encode(_ value: String, forKey key: Key) throws { node.keyed![key.stringValue] = Node(value) }
        mutating func encode(_ value: Double, forKey key: Key) throws { node.keyed![key.stringValue] = Node(value) }
        mutating func encode(_ value: Float, forKey key: Key) throws { node.keyed![key.stringValue] = Node(Double(value)) }
        mutating func encode(_ value: Int, forKey key: Key) throws { node.keyed![key.stringValue] = Node(value) }
        mutating func encode(_ value: Int8, forKey key: Key) throws { node.keyed![key.stringValue] = Node(JSONObjectEncoder.scalar(value)) }
        mutating func encode(_ value: Int16, forKey key: Key) throws { node.keyed![key.stringValue] = Node(JSONObjectEncoder.scalar(value)) }
        mutating func encode(_ value: Int32, forKey key: Key) throws { node.keyed![key.stringValue] = Node(JSONObjectEncoder.scalar(value)) }
        mutating func encode(_ value: Int64, forKey key: Key) throws { node.keyed![key.stringValue] = Node(JSONObjectEncoder.scalar(value)) }
        mutating func encode(_ value: UInt, forKey key: Key) throws { node.keyed![key.stringValue] = Node(JSONObjectEncoder.scalar(value)) }
        mutating func encode(_ value: UInt8, forKey key: Key) throws { node.keyed![key.stringValue] = Node(JSONObjectEncoder.scalar(value)) }
        mutating func encode(_ value: UInt16, forKey key: Key) throws { node.keyed![key.stringValue] = Node(JSONObjectEncoder.scalar(value)) }
        mutating func encode(_ value: UInt32, forKey key: Key) throws { node.keyed![key.stringValue] = Node(JSONObjectEncoder.scalar(value)) }
        mutating func encode(_ value: UInt64, forKey key: Key) throws { node.keyed![key.stringValue] = Node(JSONObjectEncoder.scalar(value)) }
        mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
            node.keyed![key.stringValue] = try JSONObjectEncoder.child(value, codingPath: codingPath + [key])
        }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
            let n = Node()
            node.keyed![key.stringValue] = n
            return NodeEncoder(node: n, codingPath: codingPath + [key]).container(keyedBy: keyType)
        }

        mutating func nestedUnkeyedContainer(forKey key: Key) -> UnkeyedEncodingContainer {
            let n = Node()
            node.keyed![key.stringValue] = n
            return NodeEncoder(node: n, codingPath: codingPath + [key]).unkeyedContainer()
        }

        mutating func superEncoder() -> Encoder { superEncoder(forKey: Key(stringValue: "super")!) }

        mutating func superEncoder(forKey key: Key) -> Encoder {
            let n = Node()
            node.keyed![key.stringValue] = n
            return NodeEncoder(node: n, codingPath: codingPath + [key])
        }
    }

    fileprivate struct Unkeyed: UnkeyedEncodingContainer {
        let node: Node
        let codingPath: [CodingKey]
        var count: Int { node.unkeyed!.count }

        private struct Index: CodingKey {
            var stringValue: String { "\(intValue!)" }
            var intValue: Int?
            init(_ i: Int) { intValue = i }
            init?(stringValue: String) { nil }
            init?(intValue: Int) { self.intValue = intValue }
        }

        mutating func encodeNil() throws { node.unkeyed!.append(Node(NSNull())) }
        mutating func encode(_ value: Bool) throws { node.unkeyed!.append(Node(value)) }
        mutating func encode(_ value: String) throws { node.unkeyed!.append(Node(value)) }
        mutating func encode(_ value: Double) throws { node.unkeyed!.append(Node(value)) }
        mutating func encode(_ value: Float) throws { node.unkeyed!.append(Node(Double(value))) }
        mutating func encode(_ value: Int) throws { node.unkeyed!.append(Node(value)) }
        mutating func encode(_ value: Int8) throws { node.unkeyed!.append(Node(JSONObjectEncoder.scalar(value))) }
        mutating func encode(_ value: Int16) throws { node.unkeyed!.append(Node(JSONObjectEncoder.scalar(value))) }
        mutating func encode(_ value: Int32) throws { node.unkeyed!.append(Node(JSONObjectEncoder.scalar(value))) }
        mutating func encode(_ value: Int64) throws { node.unkeyed!.append(Node(JSONObjectEncoder.scalar(value))) }
        mutating func encode(_ value: UInt) throws { node.unkeyed!.append(Node(JSONObjectEncoder.scalar(value))) }
        mutating func encode(_ value: UInt8) throws { node.unkeyed!.append(Node(JSONObjectEncoder.scalar(value))) }
        mutating func encode(_ value: UInt16) throws { node.unkeyed!.append(Node(JSONObjectEncoder.scalar(value))) }
        mutating func encode(_ value: UInt32) throws { node.unkeyed!.append(Node(JSONObjectEncoder.scalar(value))) }
        mutating func encode(_ value: UInt64) throws { node.unkeyed!.append(Node(JSONObjectEncoder.scalar(value))) }
        mutating func encode<T: Encodable>(_ value: T) throws {
            node.unkeyed!.append(try JSONObjectEncoder.child(value, codingPath: codingPath + [Index(count)]))
        }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
            let n = Node()
            node.unkeyed!.append(n)
            return NodeEncoder(node: n, codingPath: codingPath + [Index(count - 1)]).container(keyedBy: keyType)
        }

        mutating func nestedUnkeyedContainer() -> UnkeyedEncodingContainer {
            let n = Node()
            node.unkeyed!.append(n)
            return NodeEncoder(node: n, codingPath: codingPath + [Index(count - 1)]).unkeyedContainer()
        }

        mutating func superEncoder() -> Encoder {
            let n = Node()
            node.unkeyed!.append(n)
            return NodeEncoder(node: n, codingPath: codingPath + [Index(count - 1)])
        }
    }

    fileprivate struct Single: SingleValueEncodingContainer {
        let node: Node
        let codingPath: [CodingKey]

        mutating func encodeNil() throws { node.scalar = NSNull() }
        mutating func encode(_ value: Bool) throws { node.scalar = value }
        mutating func encode(_ value: String) throws { node.scalar = value }
        mutating func encode(_ value: Double) throws { node.scalar = value }
        mutating func encode(_ value: Float) throws { node.scalar = Double(value) }
        mutating func encode(_ value: Int) throws { node.scalar = value }
        mutating func encode(_ value: Int8) throws { node.scalar = JSONObjectEncoder.scalar(value) }
        mutating func encode(_ value: Int16) throws { node.scalar = JSONObjectEncoder.scalar(value) }
        mutating func encode(_ value: Int32) throws { node.scalar = JSONObjectEncoder.scalar(value) }
        mutating func encode(_ value: Int64) throws { node.scalar = JSONObjectEncoder.scalar(value) }
        mutating func encode(_ value: UInt) throws { node.scalar = JSONObjectEncoder.scalar(value) }
        mutating func encode(_ value: UInt8) throws { node.scalar = JSONObjectEncoder.scalar(value) }
        mutating func encode(_ value: UInt16) throws { node.scalar = JSONObjectEncoder.scalar(value) }
        mutating func encode(_ value: UInt32) throws { node.scalar = JSONObjectEncoder.scalar(value) }
        mutating func encode(_ value: UInt64) throws { node.scalar = JSONObjectEncoder.scalar(value) }
        mutating func encode<T: Encodable>(_ value: T) throws {
            let c = try JSONObjectEncoder.child(value, codingPath: codingPath)
            node.scalar = c.scalar
            node.keyed = c.keyed
            node.unkeyed = c.unkeyed
        }
    }
}
