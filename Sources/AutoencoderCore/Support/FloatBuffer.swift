import Foundation

/// A fixed-size, 64-byte aligned Float buffer, allocated once and zeroed.
/// Layers and models keep raw pointers into these; nothing is allocated per step.
public final class FloatBuffer {
    public let count: Int
    public let pointer: UnsafeMutablePointer<Float>
    private let owned: Bool

    public init(_ count: Int) {
        self.count = count
        owned = true
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
    }

    /// A view of memory owned elsewhere (e.g. an MPI shared window); not freed here.
    public init(borrowing pointer: UnsafeMutablePointer<Float>, count: Int) {
        self.count = count
        self.pointer = pointer
        owned = false
    }

    deinit { if owned { UnsafeMutableRawPointer(pointer).deallocate() } }

    public func zero() { pointer.update(repeating: 0, count: count) }
    public var array: [Float] { Array(UnsafeBufferPointer(start: pointer, count: count)) }
    public subscript(i: Int) -> Float {
        get { pointer[i] }
        set { pointer[i] = newValue }
    }
}
