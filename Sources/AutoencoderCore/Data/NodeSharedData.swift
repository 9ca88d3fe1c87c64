import Foundation

/// The decoded training and test sets once per node: the node's local rank 0 decodes them into an
/// MPI shared window (`SharedWindow` over the node's communicator), and every rank of the node
/// then reads its batches from there (`Dataset.withPixels`). At 64 ranks per node that is one
/// 55 MB copy of MNIST per node instead of 64.
///
/// A single rank, a run without MPI and a node of one rank keep their own copy, as before. When a
/// node cannot have the window (no room in Open MPI's shared-memory directory, /dev/shm by
/// default: the same pre-check as the shared gradient exchange, agreed over the node), its
/// leader warns and every rank of that node decodes its own copy; the other nodes are not
/// affected, and no rank waits for one that gave up.
///
/// Window layout (bytes): [training pixels | test pixels | training labels | test labels]; every
/// rank copies the labels (1 byte per image) into its own arrays.
public enum NodeSharedData {
    /// The two splits as `decode` gives them, shared per node when `topology` has nodes of several
    /// ranks. Collective over `comm`; a failure anywhere stops every rank (`Communicator.agree`).
    public static func load(name: String, comm: Communicator, topology: NodeTopology?,
                            decode: () throws -> (Dataset, Dataset)) throws -> (Dataset, Dataset) {
        guard let t = topology else { return try comm.collectively("data loading", decode)! }
        let leader = t.localRank == 0
        // Every rank joins the same two world collectives below, whatever its node does.
        let decoded: (Dataset, Dataset)?? = try comm.collectively("data loading") { leader ? try decode() : nil }
        if t.localSize == 1 {
            _ = try comm.collectively("data loading (own copy)") { () }
            return (decoded ?? nil)!
        }
        var sizes = [Double](repeating: 0, count: 4)
        if case let (train, test)? = decoded ?? nil { sizes = [Double(train.count), Double(test.count), Double(train.rows), Double(train.cols)] }
        t.node.broadcastDoubles(&sizes, root: 0, what: "data sizes")
        let nTrain = Int(sizes[0]), nTest = Int(sizes[1]), rows = Int(sizes[2]), cols = Int(sizes[3])
        let dim = rows * cols
        let trainBytes = nTrain * dim, testBytes = nTest * dim
        let bytes = trainBytes + testBytes + nTrain + nTest
        var window: SharedWindow? = nil
        var failure: AETError? = nil
        do {
            window = try SharedWindow.allocate(floats: (bytes + 3) / 4, comm: t.node)
        } catch let e as AETError {
            failure = e
        }
        var result: (Dataset, Dataset)? = nil
        if let w = window {
            let raw = UnsafeMutableRawPointer(w.base)
            let base = raw.bindMemory(to: UInt8.self, capacity: bytes)
            if leader, case let (train, test)? = decoded ?? nil {
                train.withPixels { raw.copyMemory(from: $0.baseAddress!, byteCount: trainBytes) }
                test.withPixels { (raw + trainBytes).copyMemory(from: $0.baseAddress!, byteCount: testBytes) }
                train.labels.withUnsafeBytes { (raw + trainBytes + testBytes).copyMemory(from: $0.baseAddress!, byteCount: nTrain) }
                test.labels.withUnsafeBytes { (raw + trainBytes + testBytes + nTrain).copyMemory(from: $0.baseAddress!, byteCount: nTest) }
            }
            w.sync(what: "data window")
            let labels = base + trainBytes + testBytes
            result = (Dataset(name: name, count: nTrain, rows: rows, cols: cols, sharedPixels: base, keeper: w,
                              labels: Array(UnsafeBufferPointer(start: labels, count: nTrain))),
                      Dataset(name: name, count: nTest, rows: rows, cols: cols, sharedPixels: base + trainBytes, keeper: w,
                              labels: Array(UnsafeBufferPointer(start: labels + nTrain, count: nTest))))
            // The files the node's leader read: the start-up data check compares them across nodes.
            var facts = [UInt8]()
            if leader, case let (train, test)? = decoded ?? nil {
                facts = Array([train.source, test.source].flatMap { s in
                    [s?.imagesPath ?? "", s?.imagesSHA256 ?? "", s?.labelsPath ?? "", s?.labelsSHA256 ?? ""]
                }.joined(separator: "\0").utf8)
            }
            t.node.broadcast(&facts, root: 0, what: "data sources")
            let f = String(decoding: facts, as: UTF8.self).split(separator: "\0", omittingEmptySubsequences: false).map(String.init)
            if f.count == 8, let (train, test) = result {
                for (d, o) in [(train, 0), (test, 4)] where !f[o + 1].isEmpty {
                    d.source = Dataset.Source(imagesPath: f[o], imagesSHA256: f[o + 1], labelsPath: f[o + 2], labelsSHA256: f[o + 3])
                }
            }
        } else if leader {
            let why = failure?.message ?? "no shared window"
            printError((comm.rank == 0 ? "" : "rank \(comm.rank): ")
                       + "warning: \(why); each of this node's \(t.localSize) ranks decodes its own copy of the data")
            result = decoded ?? nil
        }
        // Every rank joins this collective; the ranks of a node without the window decode here.
        let own: (Dataset, Dataset)?? = try comm.collectively("data loading (own copy)") { result == nil ? try decode() : nil }
        return result ?? (own ?? nil)!
    }

    /// For the tests (`aetrain selftest-data`): loads the splits as training does (shared per node
    /// under mpirun), decodes them again privately, and compares every byte. Collective.
    public static func selfTest(_ config: TrainConfig, comm: Communicator) throws -> (shared: Bool, identical: Bool, detail: String) {
        let topology = NodeTopology.make(comm: comm)
        let (train, test) = try load(name: config.dataset.rawValue, comm: comm, topology: topology) { try TrainingRun.decodeData(config) }
        let (ownTrain, ownTest) = try comm.collectively("data loading (check)") { try TrainingRun.decodeData(config) }!
        var differences: [String] = []
        for (what, a, b) in [("training", train, ownTrain), ("test", test, ownTest)] {
            if (a.count, a.rows, a.cols) != (b.count, b.rows, b.cols) {
                differences.append("\(what) set is \(a.count)×\(a.rows)×\(a.cols), a private decode \(b.count)×\(b.rows)×\(b.cols)")
                continue
            }
            let samePixels = a.withPixels { x in b.withPixels { y in x.count == y.count && memcmp(x.baseAddress!, y.baseAddress!, x.count) == 0 } }
            if !samePixels { differences.append("\(what) pixels differ") }
            if a.labels != b.labels { differences.append("\(what) labels differ") }
        }
        return (train.isNodeShared && test.isNodeShared, differences.isEmpty, differences.joined(separator: "; "))
    }
}
