import Foundation
import TOMLKit

/// A value read from a `--config` file (JSON or TOML).
public indirect enum ConfigValue: Equatable, Sendable {
    case bool(Bool), int(Int), uint(UInt64), double(Double), string(String), array([ConfigValue]), table, null
    /// Anything else TOML has (dates, times).
    case other(String)

    /// What it is, for messages ("a string", "a table").
    public var typeName: String {
        switch self {
        case .bool: return "a boolean"
        case .int, .uint: return "an integer"
        case .double: return "a number with a fraction"
        case .string: return "a string"
        case .array: return "an array"
        case .table: return "a table"
        case .null: return "null"
        case .other(let t): return "a \(t)"
        }
    }
}

extension ConfigValue: Decodable {
    public init(from decoder: Decoder) throws {
        if var a = try? decoder.unkeyedContainer() {
            var items: [ConfigValue] = []
            while !a.isAtEnd { items.append(try a.decode(ConfigValue.self)) }
            self = .array(items)
            return
        }
        if (try? decoder.container(keyedBy: AnyKey.self)) != nil { self = .table; return }
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let i = try? c.decode(Int.self) { self = .int(i) }
        else if let u = try? c.decode(UInt64.self) { self = .uint(u) }
        else if let d = try? c.decode(Double.self) { self = .double(d) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else { self = .other("value") }
    }

    struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }
}

/// One key of a config file. The key is the flag's long name in snake_case (`batch_size` is
/// `--batch-size`), so a file and a command line say the same thing.
public struct ConfigKey: Sendable {
    public enum Kind: Sendable {
        /// A whole number (a JSON/TOML integer).
        case integer
        /// Any number (integer or fraction).
        case number
        /// A flag without a value: true gives the flag, false leaves it out.
        case flag
        case string
        /// One of these strings.
        case choice([String])
        /// Layer widths: "256,64" or [256, 64].
        case widths
    }

    /// Where the key may appear.
    public enum Use: Sendable {
        /// Written to OUT/config.json (it changes what the run computes or writes) and read.
        case written
        /// Read from a file, never written: where the run is (out, data_dir), how it is operated
        /// (resume, check_sync, collective_timeout, on_checkpoint_error).
        case readOnly
        /// An option of the command that is not a config key (config itself, anomaly's checkpoint).
        case notAKey
    }

    public let key: String
    public let kind: Kind
    public let use: Use
    /// Only for `aetrain anomaly`.
    public let anomalyOnly: Bool

    public init(_ key: String, _ kind: Kind, _ use: Use = .written, anomalyOnly: Bool = false) {
        self.key = key
        self.kind = kind
        self.use = use
        self.anomalyOnly = anomalyOnly
    }

    public var flag: String { "--" + key.replacingOccurrences(of: "_", with: "-") }

    /// What the key expects, for messages.
    public var expected: String {
        switch kind {
        case .integer: return "an integer"
        case .number: return "a number"
        case .flag: return "true or false"
        case .string: return "a string"
        case .choice(let c): return "one of " + c.map { "\"\($0)\"" }.joined(separator: ", ")
        case .widths: return "layer widths such as \"256,64\" or [256, 64]"
        }
    }
}

/// `--config FILE` and OUT/config.json: the one table of config keys (`keys`), reading a JSON or
/// TOML file into the flags it stands for, and writing a run's resolved configuration with the
/// same keys so that `aetrain train --config OUT/config.json` repeats the run.
///
/// A flag added to `train` needs its row here: `ConfigFileTests` fails for an option of
/// `aetrain train` or `aetrain anomaly` without one, and for a `written` key that `written(_:)`
/// does not write.
public enum RunConfigFile {
    public static let fileName = "config.json"

    public static let keys: [ConfigKey] = [
        ConfigKey("dataset", .choice(DatasetName.allCases.map(\.rawValue))),
        ConfigKey("data_dir", .string, .readOnly),
        ConfigKey("model", .string),
        ConfigKey("encoder", .widths),
        ConfigKey("latent", .integer),
        ConfigKey("activation", .choice(Activation.allCases.map(\.rawValue))),
        ConfigKey("loss", .choice(LossKind.allCases.map(\.rawValue))),
        ConfigKey("epochs", .integer),
        ConfigKey("max_steps", .integer),
        ConfigKey("batch_size", .integer),
        ConfigKey("lr", .number),
        ConfigKey("lr_schedule", .string),
        ConfigKey("warmup_steps", .integer),
        ConfigKey("scale_lr", .flag),
        ConfigKey("weight_decay", .number),
        ConfigKey("adamw", .flag),
        ConfigKey("beta1", .number),
        ConfigKey("beta2", .number),
        ConfigKey("eps", .number),
        ConfigKey("seed", .integer),
        ConfigKey("train_limit", .integer),
        ConfigKey("test_limit", .integer),
        ConfigKey("out", .string, .readOnly),
        ConfigKey("log_every", .integer),
        ConfigKey("binarize", .flag),
        ConfigKey("init", .choice(InitScheme.allCases.map(\.rawValue))),
        ConfigKey("noise", .string),
        ConfigKey("sparsity_weight", .number),
        ConfigKey("sparsity_target", .number),
        ConfigKey("contractive_weight", .number),
        ConfigKey("beta", .number),
        ConfigKey("checkpoint_every", .integer),
        ConfigKey("keep", .integer),
        ConfigKey("resume", .string, .readOnly),
        ConfigKey("overwrite", .flag, .readOnly),
        ConfigKey("check_sync", .integer, .readOnly),
        ConfigKey("bucket_size", .number),
        ConfigKey("grad_sync", .choice(GradientSync.allCases.map(\.rawValue))),
        ConfigKey("collective_timeout", .number, .readOnly),
        ConfigKey("on_nan", .choice(OnNaN.allCases.map(\.rawValue))),
        ConfigKey("on_checkpoint_error", .choice(OnCheckpointError.allCases.map(\.rawValue)), .readOnly),
        ConfigKey("no_report", .flag),
        ConfigKey("report_every_epoch", .flag),
        ConfigKey("precision", .choice(Precision.allCases.map(\.rawValue))),
        ConfigKey("keep_best", .flag),
        ConfigKey("monitor", .choice(MonitorKey.allCases.map(\.rawValue))),
        ConfigKey("early_stop", .string),
        ConfigKey("val_split", .number),
        ConfigKey("normal_class", .integer, anomalyOnly: true),
        ConfigKey("config", .string, .notAKey),
        ConfigKey("checkpoint", .string, .notAKey, anomalyOnly: true),
    ]

    public static func key(_ name: String) -> ConfigKey? { keys.first { $0.key == name } }

    // MARK: reading

    /// The key/value pairs of a config file, in key order. TOML when the name ends in .toml,
    /// else JSON. A file that cannot be read is exit 3; what it says (syntax, not an object) exit 2.
    public static func read(_ path: String) throws -> [(key: String, value: ConfigValue)] {
        guard !path.isEmpty else { throw AETError.usage("--config: empty path") }
        let data: Data
        do { data = try InputFile.readAll(path, what: "a config file", maxBytes: 1 << 20) } catch let e as AETError {
            throw AETError("--config " + e.message, exitCode: e.exitCode)
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw AETError.usage("--config \(path): not UTF-8 text")
        }
        return try parse(text, toml: path.lowercased().hasSuffix(".toml"), name: path)
    }

    public static func parse(_ text: String, toml: Bool, name: String) throws -> [(key: String, value: ConfigValue)] {
        var pairs: [(key: String, value: ConfigValue)] = []
        if toml {
            let table: TOMLTable
            do { table = try TOMLTable(string: text) } catch let e as TOMLParseError {
                throw AETError.usage("--config \(name): not valid TOML: \(e.description) (line \(e.source.begin.line), column \(e.source.begin.column))")
            } catch {
                throw AETError.usage("--config \(name): not valid TOML: \(error)")
            }
            for (k, v) in table { pairs.append((k, value(v))) }
        } else {
            let obj: [String: ConfigValue]
            do { obj = try JSONDecoder().decode([String: ConfigValue].self, from: Data(text.utf8)) } catch {
                let what = (try? JSONDecoder().decode(ConfigValue.self, from: Data(text.utf8))).map { "is \($0.typeName), not an object of keys" }
                throw AETError.usage("--config \(name): \(what ?? "not valid JSON (\(jsonReason(error)))")")
            }
            pairs = obj.map { ($0.key, $0.value) }
        }
        return pairs.sorted { $0.key < $1.key }
    }

    static func jsonReason(_ e: Error) -> String {
        if case DecodingError.dataCorrupted(let ctx) = e {
            let under = (ctx.underlyingError as NSError?).map { ($0.userInfo[NSDebugDescriptionErrorKey] as? String) ?? "\($0.localizedDescription)" }
            return Safetensors.oneLine(under ?? ctx.debugDescription)
        }
        return Safetensors.oneLine("\(e)")
    }

    static func value(_ v: TOMLValueConvertible) -> ConfigValue {
        switch v.type {
        case .bool: return .bool(v.bool ?? false)
        case .int: return .int(v.int ?? 0)
        case .double: return .double(v.double ?? .nan)
        case .string: return .string(v.string ?? "")
        case .array: return .array((v.array ?? []).map { value($0) })
        case .table: return .table
        default: return .other("\(v.type)")
        }
    }

    /// The command-line arguments a file stands for (`--batch-size=256`, `--adamw`), checked
    /// key by key: an unknown key, a key of another command, or a value of the wrong type is a
    /// usage error naming the key. null (or false for a flag) leaves the flag out.
    public static func arguments(_ pairs: [(key: String, value: ConfigValue)], file: String, anomaly: Bool) throws -> [String] {
        var args: [String] = []
        for (name, v) in pairs {
            guard let k = key(name), k.use != .notAKey else {
                let near = keys.filter { $0.use != .notAKey }.map(\.key).min { distance($0, name) < distance($1, name) }
                throw AETError.usage("--config \(file): unknown key \"\(name)\"\(near.map { " (did you mean \"\($0)\"?)" } ?? ""); keys are the train flags in snake_case, e.g. batch_size for --batch-size")
            }
            if k.anomalyOnly && !anomaly {
                throw AETError.usage("--config \(file): key \"\(name)\" is for aetrain anomaly only")
            }
            func wrong() -> AETError {
                AETError.usage("--config \(file): key \"\(name)\" must be \(k.expected), not \(v.typeName)")
            }
            if v == .null { continue }
            switch k.kind {
            case .flag:
                guard case .bool(let b) = v else { throw wrong() }
                if b { args.append(k.flag) }
                continue
            case .integer:
                switch v {
                case .int(let i): args.append("\(k.flag)=\(i)")
                case .uint(let u): args.append("\(k.flag)=\(u)")
                default: throw wrong()
                }
            case .number:
                switch v {
                case .int(let i): args.append("\(k.flag)=\(i)")
                case .uint(let u): args.append("\(k.flag)=\(u)")
                case .double(let d): args.append("\(k.flag)=\(d)")
                default: throw wrong()
                }
            case .string:
                guard case .string(let s) = v else {
                    // --early-stop 3 in TOML/JSON is naturally a number.
                    if name == "early_stop", case .int(let i) = v { args.append("\(k.flag)=\(i)"); continue }
                    throw wrong()
                }
                args.append("\(k.flag)=\(s)")
            case .choice(let options):
                guard case .string(let s) = v else { throw wrong() }
                guard options.contains(s) else {
                    throw AETError.usage("--config \(file): key \"\(name)\" is \"\(s)\"; expected \(k.expected)")
                }
                args.append("\(k.flag)=\(s)")
            case .widths:
                switch v {
                case .string(let s): args.append("\(k.flag)=\(s)")
                case .array(let items):
                    let widths = try items.map { item -> String in
                        guard case .int(let w) = item else { throw wrong() }
                        return String(w)
                    }
                    guard !widths.isEmpty else { throw wrong() }
                    args.append("\(k.flag)=\(widths.joined(separator: ","))")
                default: throw wrong()
                }
            }
        }
        return args
    }

    /// Edit distance, for "did you mean".
    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var row = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var prev = row[0]
            row[0] = i
            for j in 1...max(b.count, 1) where !b.isEmpty {
                let cur = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] == b[j - 1] ? 0 : 1))
                prev = cur
            }
        }
        return row[b.count]
    }

    // MARK: writing

    /// A Float flag's value as written on a command line (0.003, not 0.0030000000260770321).
    static func number(_ f: Float) -> Double { Double("\(f)") ?? Double(f) }

    /// The `written` keys of a resolved configuration, as the flags that give it back: preset
    /// defaults resolved (loss, init, noise, penalty weights), the batch as clamped, `null` for
    /// an option left unset.
    public static func written(_ c: TrainConfig) -> [String: Any] {
        let null = NSNull()
        var o: [String: Any] = [:]
        o["dataset"] = c.dataset.rawValue
        let spec = c.model
        func code(_ s: ModelSpec) -> Int? {
            guard case .dense(let u, _)? = s.encoder.last else { return nil }
            return s.variational ? u / 2 : u
        }
        if spec.name == "custom" {
            o["model"] = "custom"
            let hidden = spec.encoder.dropLast().compactMap { l -> Int? in if case .dense(let u, _) = l { return u }; return nil }
            o["encoder"] = hidden.map(String.init).joined(separator: ",")
            o["latent"] = code(spec).map { $0 as Any } ?? null
            if case .dense(_, let act)? = spec.encoder.first { o["activation"] = act.rawValue } else { o["activation"] = null }
        } else {
            o["model"] = spec.name
            o["encoder"] = null
            let preset = ModelSpec.preset(spec.name)
            o["latent"] = (preset.map(code) ?? nil) != code(spec) ? (code(spec).map { $0 as Any } ?? null) : null
            o["activation"] = null
        }
        o["loss"] = c.objective.loss.rawValue
        o["init"] = c.initScheme.rawValue
        o["epochs"] = c.epochs
        o["max_steps"] = c.maxSteps.map { $0 as Any } ?? null
        o["batch_size"] = c.batchSize
        o["lr"] = c.adam.lr
        o["lr_schedule"] = c.lrSchedule?.kindDescription ?? "constant"
        o["warmup_steps"] = c.lrSchedule?.warmupSteps ?? 0
        o["scale_lr"] = c.lrSchedule?.scaleLR ?? false
        o["weight_decay"] = c.adam.weightDecay
        o["adamw"] = c.adam.decoupled
        o["beta1"] = c.adam.beta1
        o["beta2"] = c.adam.beta2
        o["eps"] = c.adam.eps
        o["seed"] = c.seed <= UInt64(Int.max) ? Int(c.seed) as Any : NSNumber(value: c.seed)
        o["train_limit"] = c.trainLimit.map { $0 as Any } ?? null
        o["test_limit"] = c.testLimit.map { $0 as Any } ?? null
        o["log_every"] = c.logEvery
        o["binarize"] = c.binarize
        o["noise"] = c.noise.map { $0.description as Any } ?? null
        o["sparsity_weight"] = number(c.objective.sparsityWeight)
        o["sparsity_target"] = number(c.objective.sparsityTarget)
        o["contractive_weight"] = number(c.objective.contractiveWeight)
        o["beta"] = number(c.objective.beta)
        o["checkpoint_every"] = c.checkpointEvery
        o["keep"] = c.keep
        o["bucket_size"] = c.bucketSizeMB
        o["grad_sync"] = (c.gradientSync ?? .auto).rawValue
        o["on_nan"] = c.onNaN.rawValue
        o["no_report"] = !c.report
        o["report_every_epoch"] = c.reportEveryEpoch
        o["precision"] = (c.precision ?? .f32).rawValue
        let s = c.selection
        o["keep_best"] = s?.keepBest ?? false
        o["monitor"] = s.map { $0.monitor.rawValue as Any } ?? null
        o["early_stop"] = s?.earlyStop.map { $0.description as Any } ?? null
        o["val_split"] = s?.valSplit.map { $0 as Any } ?? null
        if let k = c.normalClass { o["normal_class"] = k }
        return o
    }

    /// OUT/config.json: pretty-printed, keys sorted, one line per key.
    public static func text(_ c: TrainConfig) -> String { JSON.encode(written(c), pretty: true) + "\n" }

    /// Rank 0 writes OUT/config.json (atomically) before training.
    public static func write(_ c: TrainConfig) throws {
        let url = URL(fileURLWithPath: c.out).appendingPathComponent(fileName)
        try AtomicFile.write(Data(text(c).utf8), to: url)
    }
}
