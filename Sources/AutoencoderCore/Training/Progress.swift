import Foundation

/// Progress on stderr: a bar when stderr is a TTY, plain periodic lines otherwise (cluster logs).
public struct Progress {
    public let tty: Bool = isatty(2) != 0

    public func update(epoch: Int, epochs: Int, batch: Int, batches: Int, step: Int, loss: Double, rate: Double) {
        if tty {
            let width = 30
            let frac = Double(batch) / Double(max(batches, 1))
            let filled = Int(frac * Double(width))
            let bar = String(repeating: "█", count: filled) + String(repeating: "·", count: width - filled)
            let line = String(format: "\repoch %d/%d %@ %3.0f%% step %d loss %.5f %.0f samples/s ",
                              epoch, epochs, bar, frac * 100, step, loss, rate)
            fputs(line, stderr)
        } else {
            printError(String(format: "epoch %d/%d step %d loss %.6f samples/s %.0f", epoch, epochs, step, loss, rate))
        }
    }

    public func endLine() {
        if tty { fputs("\n", stderr) }
    }
}
