import CKernels

/// --grad-sync allreduce (Horovod's and PyTorch DDP's scheme): one in-place `MPI_Allreduce` over
/// the flat gradient buffer and its extra slots, then every rank takes the whole, identical Adam
/// step. With `--bucket-size`, buckets of finished gradients (last layers first) start
/// non-blocking all-reduces while backward goes on. On one rank (a `LocalCommunicator`) the
/// reductions do nothing: this is also the single-rank exchange ("none").
final class AllReduceExchange: GradientExchange {
    let comm: Communicator
    let model: Autoencoder
    let adam: Adam
    let name: String
    private let grads: UnsafeMutablePointer<Float>
    private let parameterCount: Int
    /// Floats per overlapped bucket (0: one all-reduce after backward).
    private let bucketFloats: Int
    /// Gradients from here to the end have a reduction in flight.
    private var pendingEnd: Int

    init(config: TrainConfig, comm: Communicator, model: Autoencoder, adam: Adam) {
        self.comm = comm
        self.model = model
        self.adam = adam
        name = comm.size > 1 ? "allreduce" : "none"
        grads = model.grads.pointer
        parameterCount = model.parameterCount
        bucketFloats = comm.size > 1 ? Int(config.bucketSizeMB * 1_000_000 / 4) : 0
        pendingEnd = model.parameterCount
    }

    func gradientsFinal(from offset: Int) {
        guard bucketFloats > 0 else { return }
        if pendingEnd - offset >= bucketFloats {
            comm.startAllreduceSum(grads + offset, count: pendingEnd - offset, what: "gradient bucket all-reduce")
            pendingEnd = offset
        } else {
            comm.progress()
        }
    }

    func reduce(_ contribution: StepContribution, checkFinite: Bool) -> StepTotals {
        let g = grads, P = parameterCount
        ExtraSlots.write(contribution, to: g + P)
        if pendingEnd < P {
            comm.startAllreduceSum(g, count: pendingEnd, what: "gradient bucket all-reduce")
            comm.startAllreduceSum(g + P, count: Autoencoder.extraSlots, what: "gradient bucket all-reduce")
            comm.waitAll(what: "gradient bucket all-reduce")
        } else {
            comm.allreduceSum(g, count: P + Autoencoder.extraSlots, what: "gradient all-reduce")
        }
        pendingEnd = P
        var totals = ExtraSlots.read(g + P)
        // Every rank holds the same sum, so every rank reaches the same verdict.
        if checkFinite && totals.loss.isFinite { totals.nonFiniteGradient = aet_all_finite(g, P) == 0 }
        return totals
    }

    func update(step: Int) -> Bool {
        adam.update(params: model.params.pointer, grads: grads)
    }

    func share(step: Int, updated: Bool, finite: Bool) -> Bool { finite }

    func shareOptimizerState() {
        let P = model.parameterCount
        comm.broadcast(adam.m.pointer, bytes: P * 4, root: 0, what: "optimizer broadcast")
        comm.broadcast(adam.v.pointer, bytes: P * 4, root: 0, what: "optimizer broadcast")
    }
}
