/// The version aetrain reports (`--version`, summary.json, checkpoint metadata).
public let aetrainVersion = "0.1.0"
