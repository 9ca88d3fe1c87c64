import Foundation

/// Opens a page in headless Chromium at a given window width and reports what a reader would
/// see: the document's width against the window's (horizontal overflow), and every image with
/// whether it loaded (its natural width). A copy of the page with a small script appended is
/// loaded from the page's own folder (so relative links resolve as they do for the page); the
/// script writes its findings into the DOM, which `--dump-dom` prints. Fails (throws) when no
/// Chromium is installed: a missing browser is not a pass.
public enum BrowserCheck {
    public struct Result {
        public var scrollWidth: Int
        public var innerWidth: Int
        public var images: [(src: String, naturalWidth: Int, complete: Bool)]
        /// Boxes (tables, scroll containers) whose content is wider than they are: the page
        /// does not overflow, but the reader would scroll inside them.
        public var scrolledBoxes: Int
        public var overflows: Bool { scrollWidth > innerWidth }
        public var brokenImages: [String] { images.filter { !$0.complete || $0.naturalWidth <= 0 }.map(\.src) }
    }

    public static func browser() throws -> String {
        let names = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":")
        for n in names {
            for d in path where FileManager.default.isExecutableFile(atPath: "\(d)/\(n)") { return "\(d)/\(n)" }
        }
        throw TestFailure("no Chromium installed (apt-get install chromium; Launch/test.sh installs it): the page check cannot run")
    }

    static let probe = """
    <script>
    window.addEventListener('load', function () {
      var imgs = Array.prototype.map.call(document.images, function (i) {
        return { src: (i.getAttribute('src') || '').slice(0, 80), w: i.naturalWidth, complete: i.complete };
      });
      var out = document.createElement('pre');
      out.id = 'aetrain-browser-check';
      var boxes = Array.prototype.filter.call(document.querySelectorAll('.scroll, pre, table'), function (e) {
        return e.scrollWidth > e.clientWidth + 1;
      }).length;
      out.textContent = 'CHECK' + JSON.stringify({ scrollWidth: document.documentElement.scrollWidth,
                                                   innerWidth: window.innerWidth, images: imgs, scrolledBoxes: boxes }) + 'CHECK';
      document.body.appendChild(out);
    });
    </script>
    """

    /// Loads `page` at `width` px and returns what the probe saw.
    public static func check(_ page: URL, width: Int = 1280, height: Int = 900) throws -> Result {
        let exe = try browser()
        var html = try String(contentsOf: page, encoding: .utf8)
        guard let end = html.range(of: "</body>", options: .backwards) else { throw TestFailure("\(page.path): no </body>") }
        html.insert(contentsOf: probe, at: end.lowerBound)
        let copy = page.deletingLastPathComponent().appendingPathComponent(".browser-check-\(UUID().uuidString).html")
        try Data(html.utf8).write(to: copy)
        defer { try? FileManager.default.removeItem(at: copy) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: exe)
        p.arguments = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=\(width),\(height)",
                       "--virtual-time-budget=10000", "--dump-dom", copy.absoluteString]
        let outURL = FileManager.default.temporaryDirectory.appendingPathComponent("dump-\(UUID().uuidString)")
        FileManager.default.createFile(atPath: outURL.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: outURL) }
        let fh = try FileHandle(forWritingTo: outURL)
        p.standardOutput = fh
        p.standardError = FileHandle.nullDevice
        try p.run()
        let t0 = Date()
        while p.isRunning && Date().timeIntervalSince(t0) < 120 { usleep(50_000) }
        if p.isRunning { p.terminate(); throw TestFailure("chromium did not finish rendering \(page.path) in 120 s") }
        try fh.close()
        let dom = try String(contentsOf: outURL, encoding: .utf8)
        guard let a = dom.range(of: "CHECK{"), let b = dom.range(of: "}CHECK", range: a.upperBound..<dom.endIndex) else {
            throw TestFailure("chromium's DOM of \(page.lastPathComponent) has no probe result (exit \(p.terminationStatus), \(dom.count) bytes)")
        }
        var json = "{" + dom[a.upperBound..<b.lowerBound] + "}"
        for (e, c) in [("&lt;", "<"), ("&gt;", ">"), ("&quot;", "\""), ("&amp;", "&")] { json = json.replacingOccurrences(of: e, with: c) }
        guard let o = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any],
              let sw = o["scrollWidth"] as? Int, let iw = o["innerWidth"] as? Int, let imgs = o["images"] as? [[String: Any]] else {
            throw TestFailure("unreadable probe result: \(json.prefix(200))")
        }
        return Result(scrollWidth: sw, innerWidth: iw, images: imgs.map {
            (($0["src"] as? String) ?? "", ($0["w"] as? Int) ?? 0, ($0["complete"] as? Bool) ?? false)
        }, scrolledBoxes: (o["scrolledBoxes"] as? Int) ?? -1)
    }

    /// A PNG screenshot of `page` at `width` (to look at).
    public static func screenshot(_ page: URL, to png: URL, width: Int = 1280, height: Int = 2400) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: try browser())
        p.arguments = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=\(width),\(height)",
                       "--virtual-time-budget=10000", "--screenshot=\(png.path)", page.absoluteString]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
    }
}
