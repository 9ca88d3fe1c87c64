import ArgumentParser
import AutoencoderCore
import Foundation

@main
struct AETrain: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "aetrain",
        abstract: "Train autoencoders on MNIST and Fashion-MNIST, data-parallel over MPI.",
        subcommands: [Models.self])
}

struct Models: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the model presets.")
    func run() throws {
        for m in ModelSpec.presets { print(m.name, m.summary) }
    }
}
