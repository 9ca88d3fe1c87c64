import XCTest
import TestSupport
@testable import AutoencoderCore

/// The training step allocates nothing: a malloc-counting LD_PRELOAD shim (compiled here with cc)
/// counts every malloc/realloc/posix_memalign/aligned_alloc of a run; 20 and 1,020 steps of the
/// same run must allocate the same number of blocks, up to the few hundred by which start-up and the
/// final JSON vary from process to process (one allocation per step would add 1,000): workspaces are
/// sized once. Each length runs twice and keeps its smallest count. It measures the
/// optimised product, `.build/release/aetrain` (Launch/test.sh builds it first); a debug build's
/// unoptimised code boxes closure captures on the heap.
final class AllocationTests: XCTestCase {
    static let shim = """
    #define _GNU_SOURCE
    #include <dlfcn.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <unistd.h>
    #include <stdatomic.h>
    static atomic_long count;
    static void *(*rm)(size_t); static void *(*rr)(void *, size_t);
    static int (*rp)(void **, size_t, size_t); static void *(*ra)(size_t, size_t);
    void *malloc(size_t n) { if (!rm) rm = dlsym(RTLD_NEXT, "malloc"); atomic_fetch_add(&count, 1); return rm(n); }
    void *realloc(void *p, size_t n) { if (!rr) rr = dlsym(RTLD_NEXT, "realloc"); atomic_fetch_add(&count, 1); return rr(p, n); }
    int posix_memalign(void **p, size_t a, size_t n) { if (!rp) rp = dlsym(RTLD_NEXT, "posix_memalign"); atomic_fetch_add(&count, 1); return rp(p, a, n); }
    void *aligned_alloc(size_t a, size_t n) { if (!ra) ra = dlsym(RTLD_NEXT, "aligned_alloc"); atomic_fetch_add(&count, 1); return ra(a, n); }
    __attribute__((destructor)) static void report(void) {
        const char *d = getenv("AET_MALLOC_OUT"); if (!d) return;
        const char *r = getenv("OMPI_COMM_WORLD_RANK"); /* one file per MPI rank: OUT.rankN */
        char path[4096]; snprintf(path, sizeof path, r ? "%s.rank%s" : "%s", d, r ? r : "");
        FILE *f = fopen(path, "w"); if (f) { fprintf(f, "%ld\\n", (long)count); fclose(f); }
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
        // Not vae and conv: for some of their small GEMM shapes OpenBLAS 0.3.21's
        // sgemm_small_kernel_b0 mallocs a scratch block on every call (inside the library).
        for model in ["mlp3", "deep32", "sparse-kl", "denoising"] {
            var counts: [Int] = []
            for steps in [20, 1020] {
              var best = Int.max
              for attempt in 0..<2 {
                let out = dir + "/\(model)-\(steps)-\(attempt)"
                let r = AE.exec([release, "--dataset", "mnist", "--data-dir", mnist, "--model", model, "--max-steps", String(steps),
                                "--epochs", "10", "--batch-size", "32", "--test-limit", "64", "--log-every", "100000",
                                "--no-report", "--out", out],
                               env: ["LD_PRELOAD": dir + "/shim.so", "AET_MALLOC_OUT": out + ".count"], timeout: 120)
                XCTAssertEqual(r.status, 0, r.stderr)
                best = min(best, Int((try String(contentsOfFile: out + ".count", encoding: .utf8)).trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1)
              }
              counts.append(best)
            }
            XCTAssertGreaterThan(counts[0], 0, "the shim counted nothing")
            XCTAssertLessThan(counts[1] - counts[0], 500, "\(model): \(counts[1] - counts[0]) allocations in 1,000 extra steps")
        }
        // Several ranks, counted per rank: two ranks with the shared gradient exchange (barriers
        // and the fused Adam pass), and four as 2 × 2 pretend nodes with the hierarchical one (node
        // sums, the ring across nodes from point-to-point messages, the node's data window). (Not
        // the all-reduce exchange: Open MPI's all-reduce algorithms malloc a scratch buffer on every
        // call, inside the library.)
        try AE.requireMPI()
        for (np, sync, perNode) in [(2, "shared", "2"), (4, "hierarchical", "2")] {
            var counts: [[Int]] = []
            for steps in [20, 1020] {
                var best = [Int](repeating: Int.max, count: np)
                for attempt in 0..<2 {
                    let out = dir + "/np\(np)-\(sync)-\(steps)-\(attempt)"
                    let r = AE.exec(["mpirun", "--oversubscribe", "-np", String(np), "-x", "LD_PRELOAD=" + dir + "/shim.so", "-x", "AET_MALLOC_OUT=" + out + ".count",
                                     "-x", "AETRAIN_TEST_RANKS_PER_NODE=" + perNode,
                                     release, "--dataset", "mnist", "--data-dir", mnist, "--model", "mlp3", "--max-steps", String(steps),
                                     "--epochs", "10", "--batch-size", "32", "--test-limit", "64", "--log-every", "100000",
                                     "--grad-sync", sync, "--no-report", "--out", out], timeout: 180)
                    XCTAssertEqual(r.status, 0, r.stderr)
                    XCTAssertEqual(AE.json(out + "/summary.json")?["grad_sync"] as? String, sync)
                    for rank in 0..<np {
                        let text = (try? String(contentsOfFile: out + ".count.rank\(rank)", encoding: .utf8)) ?? ""
                        best[rank] = min(best[rank], Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1)
                    }
                }
                counts.append(best)
            }
            for rank in 0..<np {
                XCTAssertGreaterThan(counts[0][rank], 0, "np \(np) rank \(rank): the shim counted nothing")
                XCTAssertLessThan(counts[1][rank] - counts[0][rank], 500,
                                  "np \(np) \(sync) rank \(rank): \(counts[1][rank] - counts[0][rank]) allocations in 1,000 extra steps")
            }
        }
    }
}
