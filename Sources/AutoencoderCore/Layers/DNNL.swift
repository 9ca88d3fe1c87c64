import CDNNL
import CKernels
import Foundation

/// Arithmetic of the matrix products and convolutions (`--precision`).
public enum Precision: String, Codable, CaseIterable, Sendable {
    /// f32 inputs, f32 accumulation.
    case f32
    /// bf16 inputs (8 significant bits) with f32 accumulation. Master weights, Adam moments, the
    /// gradient exchange, the loss and checkpoints stay f32; each forward pass rounds the weights
    /// it reads to bf16.
    case bf16

    /// The element type code of dnnl_ops.h / kernels.h.
    var code: Int32 { self == .bf16 ? Int32(AET_BF16) : Int32(AET_F32) }
}

/// How a spatial layer's activations (and their gradients) lie in memory. The model's input,
/// code and output are always NCHW f32; between two spatial layers the model may choose a
/// layout with channels innermost and, with `--precision bf16`, bf16 elements.
struct TensorFormat: Equatable, CustomStringConvertible {
    enum Layout: Int32 { case nchw = 0, nhwc = 1, blocked16 = 2 }
    var layout: Layout
    var type: Precision
    static let nchw = TensorFormat(layout: .nchw, type: .f32)
    var description: String { "\(layout)/\(type)" }
}

/// oneDNN: what this machine runs, and its threads.
public enum DNNL {
    /// oneDNN's version, e.g. "2.6.3".
    public static var version: String { String(cString: aet_dnnl_version()) }
    /// The instruction set oneDNN's kernels use here, e.g. "avx512_core_bf16".
    public static var isa: String { String(cString: aet_dnnl_isa()) }
    /// bf16 primitives need AVX-512 (native bf16 instructions, or emulated on avx512_core).
    public static var bf16Supported: Bool { aet_dnnl_bf16_supported() != 0 }
    /// The CPU has AVX-512 bf16 instructions (else bf16 runs emulated, slower than f32).
    public static var bf16Native: Bool { aet_dnnl_bf16_native() != 0 }
    /// oneDNN runs AVX-512 kernels (its 16-channel blocked layout is then the convolutions').
    public static var avx512: Bool { aet_dnnl_avx512() != 0 }
    /// OpenMP threads of oneDNN's primitives.
    public static var threads: Int { Int(aet_dnnl_threads()) }
    public static func setThreads(_ n: Int) { aet_dnnl_set_threads(Int32(n)) }

    /// Stops the process with one line when a primitive cannot be created (out of memory, or a
    /// shape oneDNN has no implementation for): never a silent fallback.
    static func created<T>(_ p: T?, _ what: @autoclosure () -> String) -> T {
        if let p { return p }
        printError("error: \(what()): \(String(cString: aet_dnnl_error()))")
        exit(ExitCode.failure)
    }
}

/// A 64-byte aligned buffer of bf16 values, allocated once and zeroed.
final class BF16Buffer {
    let count: Int
    let pointer: UnsafeMutablePointer<UInt16>

    init(_ count: Int) {
        self.count = count
        let bytes = max(count, 1) * 2
        let raw = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        pointer = raw.bindMemory(to: UInt16.self, capacity: max(count, 1))
    }

    deinit { UnsafeMutableRawPointer(pointer).deallocate() }

    /// The bf16 values as Float.
    var floats: [Float] {
        (0..<count).map { Float(bitPattern: UInt32(pointer[$0]) << 16) }
    }
}

/// One oneDNN matrix product C[M,N] = A[M,K]·B[K,N] (+ bias) (+ C) → activation, created once for
/// its shape. Operands are given by (row, column) element strides, so transposes cost nothing.
final class MatMul {
    let op: OpaquePointer

    struct Operand {
        var rowStride: Int
        var colStride: Int
        var type: Precision
        /// Row-major [rows, cols] with leading dimension `ld`.
        static func rows(_ ld: Int, _ type: Precision) -> Operand { Operand(rowStride: ld, colStride: 1, type: type) }
        /// The transpose of a row-major matrix with leading dimension `ld`.
        static func transposed(_ ld: Int, _ type: Precision) -> Operand { Operand(rowStride: 1, colStride: ld, type: type) }
    }

    init(m: Int, n: Int, k: Int, a: Operand, b: Operand, c: Operand, bias: Bool = false,
         activation: Activation = .identity, accumulate: Bool = false, what: @autoclosure () -> String) {
        op = DNNL.created(aet_matmul_create(m, n, k, a.rowStride, a.colStride, a.type.code, b.rowStride, b.colStride, b.type.code,
                                            c.rowStride, c.type.code, bias ? 1 : 0, activation.kernelKind, accumulate ? 1 : 0),
                          "\(what()): matrix product \(m)×\(n)×\(k)")
    }

    deinit { aet_matmul_free(op) }

    @inline(__always)
    func run(_ a: UnsafeRawPointer, _ b: UnsafeRawPointer, _ c: UnsafeMutableRawPointer, bias: UnsafePointer<Float>? = nil) {
        aet_matmul_run(op, a, b, c, bias)
    }

    var implementation: String { String(cString: aet_matmul_impl(op)) }
}

/// Per-batch-size cache of primitives: the training batch, the last partial batch, uneven rank
/// slices and evaluation each get their own, created on first use and kept.
struct PrimitiveCache<T> {
    private var entries: [Int: T] = [:]

    mutating func get(_ n: Int, _ make: () -> T) -> T {
        if let e = entries[n] { return e }
        let e = make()
        entries[n] = e
        return e
    }

    mutating func removeAll() { entries.removeAll() }
    var count: Int { entries.count }
}
