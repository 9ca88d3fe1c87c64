import Foundation

/// Which ranks share a node: this rank's node communicator (`MPI_Comm_split_type`,
/// `MPI_COMM_TYPE_SHARED`), the node's index among the nodes, and the largest number of ranks
/// on any node. Worked out once at start-up (collective over the world) for the parts that use
/// node-shared memory across several nodes: `HierarchicalExchange` and the node's one copy of
/// the data (`NodeSharedData`). Nil for a single rank.
///
/// Tests on one machine split the ranks into pretend nodes of `FaultInjection.ranksPerNode`
/// consecutive ranks (`AETRAIN_TEST_RANKS_PER_NODE=2`: np 4 runs as 2 nodes × 2 ranks; `=3`:
/// 3 + 1). Every pretend node is still one machine's shared memory, so its windows work.
public final class NodeTopology {
    /// The ranks on this rank's node, in world rank order (local rank = `node.rank`).
    let node: MPICommunicator
    /// Local rank 0 of every node, in node order; nil on the other ranks.
    let leaders: MPICommunicator?
    /// This node's index (0 holds world rank 0) and the number of nodes.
    public let nodeIndex: Int
    public let nodeCount: Int
    /// The most ranks on any node.
    public let maxLocalSize: Int
    /// True when the nodes are the test hook's pretend ones.
    public let pretend: Bool

    public var localRank: Int { node.rank }
    public var localSize: Int { node.size }

    private init(node: MPICommunicator, leaders: MPICommunicator?, nodeIndex: Int, nodeCount: Int, maxLocalSize: Int, pretend: Bool) {
        self.node = node
        self.leaders = leaders
        self.nodeIndex = nodeIndex
        self.nodeCount = nodeCount
        self.maxLocalSize = maxLocalSize
        self.pretend = pretend
    }

    /// The topology of `comm`'s ranks; nil for one rank or a local communicator. Collective.
    public static func make(comm: Communicator, faults: FaultInjection = .current) -> NodeTopology? {
        guard comm.size > 1, let world = comm as? MPICommunicator else { return nil }
        let node: MPICommunicator
        if let k = faults.ranksPerNode {
            node = world.split(color: world.rank / k, key: world.rank)
        } else {
            node = world.splitByNode()
        }
        let leaders = world.split(color: node.rank == 0 ? 0 : nil, key: world.rank)
        // The leaders' communicator ranks the nodes by their first world rank; every rank learns
        // its node's index and the node count from its leader, and the largest node size.
        var v = [Double(leaders?.rank ?? 0), Double(leaders?.size ?? 0)]
        node.broadcastDoubles(&v, root: 0, what: "node topology")
        var m = [Double(node.size)]
        world.allreduceMax(&m, count: 1, what: "node topology")
        return NodeTopology(node: node, leaders: leaders, nodeIndex: Int(v[0]), nodeCount: Int(v[1]), maxLocalSize: Int(m[0]),
                            pretend: faults.ranksPerNode != nil)
    }

    /// "2 nodes × 2 ranks", "2 nodes (3 + 1 ranks)".
    public func describe(worldSize: Int) -> String {
        let kind = pretend ? "pretend nodes" : "nodes"
        if worldSize == nodeCount * maxLocalSize { return "\(nodeCount) \(kind) × \(maxLocalSize) ranks" }
        return "\(nodeCount) \(kind), at most \(maxLocalSize) ranks on one"
    }
}

/// Memory that a node's ranks share: an MPI shared window over the node communicator when the
/// node has several ranks, else this rank's own buffer. `sync` orders it (a node barrier), and
/// does nothing for a node of one rank.
final class NodeMemory {
    let base: UnsafeMutablePointer<Float>
    let floats: Int
    private let window: SharedWindow?
    private let own: FloatBuffer?

    /// Collective over `node`; throws on every rank of the node when the shared memory cannot be
    /// had (see `SharedWindow.allocate`).
    init(floats: Int, node: MPICommunicator) throws {
        self.floats = floats
        if node.size > 1, let w = try SharedWindow.allocate(floats: floats, comm: node) {
            window = w
            own = nil
            base = w.base
        } else {
            window = nil
            let b = FloatBuffer(floats)
            own = b
            base = b.pointer
        }
    }

    var isShared: Bool { window != nil }

    func sync(what: String) { window?.sync(what: what) }
}
