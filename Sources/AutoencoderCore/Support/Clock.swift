import Foundation

/// Monotonic seconds.
@inline(__always) public func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

/// Attributes the time of a step to its phases: each `lap` returns the seconds since the last one.
struct PhaseClock {
    private let start: Double
    private var last: Double

    init() {
        start = now()
        last = start
    }

    @inline(__always) mutating func lap() -> Double {
        let t = now()
        defer { last = t }
        return t - last
    }

    /// Seconds from the start to the last lap.
    var elapsed: Double { last - start }
}
