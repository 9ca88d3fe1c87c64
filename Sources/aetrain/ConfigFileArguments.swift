import AutoencoderCore
import Foundation

/// `--config FILE` for `train` (and `anomaly`): the file's keys become the flags they name,
/// placed before the command line's own arguments, so that a flag given on the command line
/// overrides the file (the last value of an option wins) and an option in neither keeps its
/// default. The keys, their types and which ones OUT/config.json holds are in RunConfigFile.
enum ConfigFileArguments {
    /// The arguments (without the program name) with a config file's flags spliced in after the
    /// subcommand name; unchanged when there is no --config or the command is not train/anomaly.
    static func expand(_ args: [String]) throws -> [String] {
        let first = args.first
        let anomaly = first == "anomaly"
        let train = first == nil || first == "train" || (first?.hasPrefix("-") ?? false)
        guard train || anomaly else { return args }
        var path: String? = nil
        var i = 0
        while i < args.count {
            let a = args[i]
            if a == "--" { break }
            if a == "--config" {
                guard i + 1 < args.count else { return args }  // the parser reports the missing value
                path = args[i + 1]
                i += 2
                continue
            }
            if a.hasPrefix("--config=") { path = String(a.dropFirst("--config=".count)) }
            i += 1
        }
        guard let path else { return args }
        let fileArgs = try RunConfigFile.arguments(RunConfigFile.read(path), file: path, anomaly: anomaly)
        if let first, first == "train" || first == "anomaly" { return [first] + fileArgs + args.dropFirst() }
        return fileArgs + args
    }
}
