import CZlib
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The two datasets, where to find them and how to fetch them.
public enum DatasetName: String, Codable, CaseIterable, Sendable {
    case fashionMNIST = "fashion-mnist"
    case mnist

    public var classNames: [String] {
        switch self {
        case .mnist: return (0...9).map(String.init)
        case .fashionMNIST:
            return ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
        }
    }

    /// Public mirrors, tried in order.
    public var mirrors: [String] {
        switch self {
        case .mnist: return ["https://ossci-datasets.s3.amazonaws.com/mnist/"]
        case .fashionMNIST: return ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"]
        }
    }

    public static let fileNames = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                   "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]

    /// SHA-256 of each file's *decompressed* IDX content. Checking the content rather than the
    /// .gz bytes accepts any faithful re-compression (Debian repacks the files) while still
    /// catching a wrong or damaged download.
    public var contentSHA256: [String: String] {
        switch self {
        case .mnist: return [
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ]
        case .fashionMNIST: return [
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ]
        }
    }
}

public enum DataSource {
    public static let debianFashionDir = "/usr/share/datasets/fashion-mnist"

    /// The candidate directories, in order: --data-dir, $AETRAIN_DATA_DIR/<dataset>, the Debian
    /// package (Fashion-MNIST), ./data/<dataset>.
    public static func candidates(_ ds: DatasetName, dataDir: String?, env: [String: String]) -> [String] {
        if let dataDir { return [dataDir] }
        var c: [String] = []
        if let root = env["AETRAIN_DATA_DIR"], !root.isEmpty { c.append((root as NSString).appendingPathComponent(ds.rawValue)) }
        if ds == .fashionMNIST { c.append(debianFashionDir) }
        c.append("./data/\(ds.rawValue)")
        return c
    }

    /// The first candidate holding the training images; a clear error naming every path tried.
    public static func resolve(_ ds: DatasetName, dataDir: String?,
                               env: [String: String] = ProcessInfo.processInfo.environment) throws -> String {
        let fm = FileManager.default
        if let dataDir {
            var isDir: ObjCBool = false
            guard fm.fileExists(atPath: dataDir, isDirectory: &isDir) else {
                throw AETError.data("--data-dir \(dataDir): no such directory")
            }
            guard isDir.boolValue else { throw AETError.data("--data-dir \(dataDir): is a file, expected a directory holding the four IDX files") }
            return dataDir
        }
        let tried = candidates(ds, dataDir: nil, env: env)
        for dir in tried {
            if fm.fileExists(atPath: dir + "/train-images-idx3-ubyte.gz") || fm.fileExists(atPath: dir + "/train-images-idx3-ubyte") {
                return dir
            }
        }
        let hint = ds == .fashionMNIST ? "apt-get install dataset-fashion-mnist, or aetrain fetch fashion-mnist" : "aetrain fetch mnist"
        throw AETError.data("\(ds.rawValue) not found; tried \(tried.joined(separator: ", ")) (get it with: \(hint), or pass --data-dir)")
    }

    /// SHA-256 of a file's decompressed content (zlib reads raw files transparently).
    public static func contentDigest(path: String) throws -> String {
        let f = try GzFile(path, hashing: true)
        defer { f.close() }
        try f.drain()
        return f.contentDigest()
    }

    /// Checks a file against the built-in digest; throws a one-line error naming it on mismatch.
    public static func verify(_ ds: DatasetName, file base: String, path: String) throws {
        let got = try contentDigest(path: path)
        guard let want = ds.contentSHA256[base] else { throw AETError.data("\(path): unknown file name \(base)") }
        if got != want {
            throw AETError.data("\(path): SHA-256 of the content is \(got), expected \(want) for \(ds.rawValue) \(base)")
        }
    }

    /// Downloads the four files into `dir`, verifies each digest, and writes each atomically.
    /// `mirror` overrides the public mirror (a URL prefix; file:// works, for offline copies).
    public static func fetch(_ ds: DatasetName, into dir: String, mirror: String?, log: (String) -> Void) throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let bases = mirror.map { [$0.hasSuffix("/") ? $0 : $0 + "/"] } ?? ds.mirrors
        for name in DatasetName.fileNames {
            let dest = (dir as NSString).appendingPathComponent(name + ".gz")
            if FileManager.default.fileExists(atPath: dest), (try? verify(ds, file: name, path: dest)) != nil {
                log("\(dest): present, checksum ok")
                continue
            }
            var lastError = ""
            var done = false
            for base in bases {
                let url = base + name + ".gz"
                do {
                    let data = try download(url)
                    let tmp = dest + ".download-\(getpid())"
                    try AtomicFile.write(data, to: URL(fileURLWithPath: tmp))
                    defer { unlink(tmp) }
                    try verify(ds, file: name, path: tmp)
                    try AtomicFile.write(data, to: URL(fileURLWithPath: dest))
                    log("\(dest): downloaded from \(url), checksum ok")
                    done = true
                    break
                } catch let e as AETError {
                    lastError = e.message
                }
            }
            if !done {
                let hint = ds == .fashionMNIST
                    ? "install it with apt-get install dataset-fashion-mnist, or copy the four .gz files into \(dir) by hand"
                    : "copy the four .gz files (\(DatasetName.fileNames.joined(separator: ", "))) into \(dir) by hand"
                throw AETError.io("fetch \(ds.rawValue): \(lastError); \(hint)")
            }
        }
    }

    static func download(_ url: String) throws -> Data {
        guard let u = URL(string: url) else { throw AETError.usage("\(url): not a URL") }
        if u.isFileURL {
            do {
                return try InputFile.readAll(u.path, what: "a dataset file", maxBytes: 1 << 30)
            } catch let e as AETError {  // name the URL, as for a download
                throw AETError.io("\(url): " + (e.message.hasPrefix(u.path + ": ") ? String(e.message.dropFirst(u.path.count + 2)) : e.message))
            }
        }
        final class Box: @unchecked Sendable { var data: Data?; var error: String? }
        let box = Box()
        let sem = DispatchSemaphore(value: 0)
        var req = URLRequest(url: u)
        req.timeoutInterval = 30
        let task = URLSession.shared.dataTask(with: req) { data, resp, err in
            if let err { box.error = err.localizedDescription }
            else if let h = resp as? HTTPURLResponse, h.statusCode != 200 { box.error = "HTTP \(h.statusCode)" }
            else { box.data = data }
            sem.signal()
        }
        task.resume()
        sem.wait()
        if let d = box.data { return d }
        throw AETError.io("cannot download \(url): \(box.error ?? "no data") (offline?)")
    }
}
