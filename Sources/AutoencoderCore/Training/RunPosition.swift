/// Where a run stands: what a checkpoint records so that a resume continues the same sequence.
public struct RunPosition: Codable, Equatable, Sendable {
    /// Epoch in progress (0-based) and the next global batch within it.
    public var epoch = 0
    public var batchInEpoch = 0
    /// Optimiser steps taken.
    public var step = 0
    public init() {}
}
