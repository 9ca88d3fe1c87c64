import ArgumentParser
import AutoencoderCore
import Foundation

struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Compare finished runs: curves overlaid, summaries and configs side by side (differing keys marked), reconstructions stacked, in one self-contained HTML page; a table on stdout.")
    @Argument(help: "Run folders (the --out of each run).") var runs: [String]
    @Option(help: "The HTML page to write.") var output: String = "compare.html"

    func run() throws {
        guard !runs.isEmpty else { throw AETError.usage("compare: name at least one run folder") }
        if output.isEmpty { throw AETError.usage("--output: empty path") }
        let loaded = try runs.map(RunHistory.load)
        try AtomicFile.write(Data(RunComparison.html(loaded).utf8), to: URL(fileURLWithPath: output))
        print(RunComparison.text(loaded), terminator: "")
        printError("wrote \(output)")
    }
}
