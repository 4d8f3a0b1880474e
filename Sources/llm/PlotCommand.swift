// `llm plot OUTPUT_DIR -o loss.svg [--log-steps]`: draws a run's main.log as an SVG chart.

import ArgumentParser
import LLM

struct PlotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plot",
        abstract: "Draw train/val loss and HellaSwag accuracy from a run's main.log as an SVG chart.")

    @Argument(help: "The run's output folder (holding main.log), or a main.log file itself.")
    var outputDirectory: String

    @Option(name: [.short, .customLong("output")], help: "The SVG file to write (default: OUTPUT_DIR/loss.svg).")
    var output: String?

    @Flag(name: .customLong("log-steps"), help: "Log-scaled step axis (step 0 is left out).")
    var logSteps = false

    @Option(name: .long, help: "Chart title (default: the log's path).")
    var title: String?

    @Option(name: .customLong("loss-min"), help: "Bottom of the loss axis (default: fit the data).")
    var lossMin: Double?

    @Option(name: .customLong("loss-max"), help: "Top of the loss axis (default: fit the data), e.g. 5 to see past the first steps.")
    var lossMax: Double?

    func run() throws {
        let logPath = isDirectory(outputDirectory) ? joinPath(outputDirectory, "main.log") : outputDirectory
        if !fileExists(logPath) { throw LLMError("\(logPath): no such file (expected a run folder or its main.log)") }
        let records = try TrainingLog.read(logPath)
        if records.isEmpty { throw LLMError("\(logPath): no `s:N trl:`, `tel:` or `eval:` lines to plot") }
        let svgPath = output ?? (isDirectory(outputDirectory) ? joinPath(outputDirectory, "loss.svg") : "loss.svg")
        let svg = try plotSVG(records, title: title ?? logPath, logSteps: logSteps, lossLimits: (lossMin, lossMax))
        try writeFileAtomically(svgPath, Array(svg.utf8))
        print("\(svgPath): \(records.train.count) train, \(records.validation.count) val, "
              + "\(records.evaluation.count) HellaSwag points")
    }
}
