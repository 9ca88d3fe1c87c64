import XCTest
import TestSupport
@testable import AutoencoderCore

/// The training step allocates nothing: a malloc-counting LD_PRELOAD shim (compiled here with cc)
/// counts every malloc/realloc/posix_memalign/aligned_alloc of a run; a short and a long run of the
/// same configuration must allocate the same number of blocks, up to the few hundred by which
/// start-up and the final JSON vary from process to process (one allocation per step would add one
/// per extra step): workspaces and oneDNN primitives are made once. Each length runs twice and
/// keeps its smallest count. It measures the optimised product, `.build/release/aetrain`
/// (Launch/test.sh builds it first); a debug build's unoptimised code boxes closure captures on the
/// heap.
///
/// oneDNN itself allocates a few small blocks per primitive execution (its argument map, freed
/// before it returns). The shim defines `aet_alloc_probe_pause`, which aetrain's oneDNN layer calls
/// around every execution: those blocks are counted apart, reported, and bounded per step.
final class AllocationTests: XCTestCase {
    static let shim = """
    #define _GNU_SOURCE
    #include <dlfcn.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <unistd.h>
    #include <stdatomic.h>
    static atomic_long count, inside, executions;
    static __thread int paused;
    void aet_alloc_probe_pause(int on) { paused = on; if (on) atomic_fetch_add(&executions, 1); }
    #define COUNT() atomic_fetch_add(paused ? &inside : &count, 1)
    static void *(*rm)(size_t); static void *(*rr)(void *, size_t);
    static int (*rp)(void **, size_t, size_t); static void *(*ra)(size_t, size_t);
    void *malloc(size_t n) { if (!rm) rm = dlsym(RTLD_NEXT, "malloc"); COUNT(); return rm(n); }
    void *realloc(void *p, size_t n) { if (!rr) rr = dlsym(RTLD_NEXT, "realloc"); COUNT(); return rr(p, n); }
    int posix_memalign(void **p, size_t a, size_t n) { if (!rp) rp = dlsym(RTLD_NEXT, "posix_memalign"); COUNT(); return rp(p, a, n); }
    void *aligned_alloc(size_t a, size_t n) { if (!ra) ra = dlsym(RTLD_NEXT, "aligned_alloc"); COUNT(); return ra(a, n); }
    __attribute__((destructor)) static void report(void) {
        const char *d = getenv("AET_MALLOC_OUT"); if (!d) return;
        const char *r = getenv("OMPI_COMM_WORLD_RANK"); /* one file per MPI rank: OUT.rankN */
        char path[4096]; snprintf(path, sizeof path, r ? "%s.rank%s" : "%s", d, r ? r : "");
        FILE *f = fopen(path, "w"); if (f) { fprintf(f, "%ld %ld %ld\\n", (long)count, (long)inside, (long)executions); fclose(f); }
    }
    """

    func testTrainingStepsAllocateNothing() throws {
        let mnist = try AE.requireMNIST()
        let release = try AE.releaseBinary()
        guard let cc = AE.which("cc") ?? AE.which("gcc") ?? AE.which("clang") else {
            throw TestFailure("no C compiler (cc, gcc or clang) for the malloc shim")
        }
        let dir = AE.tempDir("malloc")
        try Self.shim.write(toFile: dir + "/shim.c", atomically: true, encoding: .utf8)
        let build = AE.exec([cc, "-O2", "-shared", "-fPIC", "-o", dir + "/shim.so", dir + "/shim.c", "-ldl"], timeout: 60)
        XCTAssertEqual(build.status, 0, build.stderr)
        // (model, precision, batch, extra steps): every preset kind, both precisions for the
        // dense, convolutional and recurrent paths. Start-up alone varies by up to ~650 allocations
        // between identical runs (measured: 22,411–23,056 for conv at 20 steps), so the extra steps
        // are many (4,000: "fewer than one allocation every two steps" stands clear of that noise),
        // and the batches small enough (≤ 8: 7,500 steps per MNIST epoch) that no epoch ends inside
        // them (an epoch's end evaluates and checkpoints: ~1,300 allocations, not per step). One
        // oneDNN thread: a second OpenMP thread allocates outside the probed executions.
        let extra = 4000
        var runs: [(String, String, Int, Int)] = [("mlp3", "f32", 8, extra), ("deep32", "f32", 8, extra), ("sparse-kl", "f32", 8, extra),
                                                  ("denoising", "f32", 8, extra), ("vae", "f32", 8, extra), ("conv", "f32", 4, extra),
                                                  ("lstm", "f32", 8, extra)]
        if DNNL.bf16Supported { runs += [("mlp3", "bf16", 8, extra), ("conv", "bf16", 4, extra), ("lstm", "bf16", 8, extra)] }
        for (model, precision, batch, extra) in runs {
            var counts: [(own: Int, inside: Int, executions: Int)] = []
            for steps in [20, 20 + extra] {
              var best = (own: Int.max, inside: Int.max, executions: Int.max)
              for attempt in 0..<2 {
                let out = dir + "/\(model)-\(precision)-\(steps)-\(attempt)"
                let r = AE.exec([release, "--dataset", "mnist", "--data-dir", mnist, "--model", model, "--max-steps", String(steps),
                                "--epochs", "10", "--batch-size", String(batch), "--test-limit", "64", "--log-every", "100000",
                                "--precision", precision, "--no-report", "--out", out],
                               env: ["LD_PRELOAD": dir + "/shim.so", "AET_MALLOC_OUT": out + ".count", "OMP_NUM_THREADS": "1"], timeout: 180)
                XCTAssertEqual(r.status, 0, r.stderr)
                let c = Self.counts(out + ".count")
                best = (min(best.own, c.own), min(best.inside, c.inside), min(best.executions, c.executions))
              }
              counts.append(best)
            }
            let name = "\(model) \(precision)"
            XCTAssertGreaterThan(counts[0].own, 0, "\(name): the shim counted nothing")
            XCTAssertGreaterThan(counts[1].inside, counts[0].inside, "\(name): the probe saw no oneDNN execution")
            XCTAssertLessThan(counts[1].own - counts[0].own, extra / 2, "\(name): \(counts[1].own - counts[0].own) allocations in \(extra) extra steps")
            let inside = Double(counts[1].inside - counts[0].inside), runs = Double(counts[1].executions - counts[0].executions)
            print("\(name): per step \(runs / Double(extra)) oneDNN executions allocating \(inside / Double(extra)) blocks inside oneDNN")
            XCTAssertLessThanOrEqual(inside / runs, 10, "\(name): oneDNN allocates \(inside / runs) blocks per execution")
        }
        // Several ranks, counted per rank: two ranks with the shared gradient exchange (barriers
        // and the fused Adam pass), and four as 2 × 2 pretend nodes with the hierarchical one (node
        // sums, the ring across nodes from point-to-point messages, the node's data window). (Not
        // the all-reduce exchange: Open MPI's all-reduce algorithms malloc a scratch buffer on every
        // call, inside the library.)
        try AE.requireMPI()
        for (np, sync, perNode) in [(2, "shared", "2"), (4, "hierarchical", "2")] {
            var counts: [[Int]] = []
            for steps in [20, 20 + extra] {
                var best = [Int](repeating: Int.max, count: np)
                for attempt in 0..<2 {
                    let out = dir + "/np\(np)-\(sync)-\(steps)-\(attempt)"
                    let r = AE.exec(["mpirun", "--oversubscribe", "-np", String(np), "-x", "LD_PRELOAD=" + dir + "/shim.so", "-x", "AET_MALLOC_OUT=" + out + ".count",
                                     "-x", "AETRAIN_TEST_RANKS_PER_NODE=" + perNode, "-x", "OMP_NUM_THREADS=1",
                                     release, "--dataset", "mnist", "--data-dir", mnist, "--model", "mlp3", "--max-steps", String(steps),
                                     "--epochs", "10", "--batch-size", "8", "--test-limit", "64", "--log-every", "100000",
                                     "--grad-sync", sync, "--no-report", "--out", out], timeout: 180)
                    XCTAssertEqual(r.status, 0, r.stderr)
                    XCTAssertEqual(AE.json(out + "/summary.json")?["grad_sync"] as? String, sync)
                    for rank in 0..<np { best[rank] = min(best[rank], Self.counts(out + ".count.rank\(rank)").own) }
                }
                counts.append(best)
            }
            for rank in 0..<np {
                XCTAssertGreaterThan(counts[0][rank], 0, "np \(np) rank \(rank): the shim counted nothing")
                XCTAssertLessThan(counts[1][rank] - counts[0][rank], extra / 2,
                                  "np \(np) \(sync) rank \(rank): \(counts[1][rank] - counts[0][rank]) allocations in \(extra) extra steps")
            }
        }
    }

    /// (aetrain's own allocations, those inside oneDNN executions, oneDNN executions) from the
    /// shim's report; -1 when missing.
    static func counts(_ path: String) -> (own: Int, inside: Int, executions: Int) {
        let f = ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: " ").map {
            Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        }
        return f.count == 3 ? (f[0], f[1], f[2]) : (-1, -1, -1)
    }
}
