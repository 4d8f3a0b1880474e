// A self-contained SVG chart of a training run from its main.log: train loss (line), val loss
// (points and line) and, when logged, HellaSwag accuracy on a second panel; for `llm plot`.
//
// API:
//   let records = try TrainingLog.read("out/main.log")
//   let svg = try plotSVG(records, title: "GPT-2 d12 on FineWeb", logSteps: false)
//   try writeFileAtomically("loss.svg", Array(svg.utf8))
// Ticks are "nice" (1, 2, 5 x 10^k) on linear axes and powers of ten (with 2 and 5 between them
// when the range is short) on the log-step axis; step 0 cannot sit on a log axis and is left out.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - Axes

/// One axis: a domain mapped linearly (or by log10) onto a pixel range.
struct PlotAxis {
    var low: Double, high: Double          // domain
    var pixelLow: Double, pixelHigh: Double
    var logarithmic = false

    func pixel(_ value: Double) -> Double {
        let (a, b, x) = logarithmic ? (log10(low), log10(high), log10(value)) : (low, high, value)
        return pixelLow + (x - a) / (b - a) * (pixelHigh - pixelLow)
    }

    /// Tick positions inside the domain.
    func ticks() -> [Double] {
        if logarithmic {
            let first = Int(floor(log10(low))), last = Int(ceil(log10(high)))
            let multipliers: [Double] = last - first <= 2 ? [1, 2, 5] : [1]
            var t: [Double] = []
            for e in first ... last {
                for m in multipliers {
                    let v = m * pow(10, Double(e))
                    if v >= low * (1 - 1e-9) && v <= high * (1 + 1e-9) { t.append(v) }
                }
            }
            return t
        }
        let step = niceStep((high - low) / 6)
        var t: [Double] = []
        var v = ceil(low / step - 1e-9) * step
        while v <= high + step * 1e-9 {
            t.append(abs(v) < step * 1e-9 ? 0 : v)
            v += step
        }
        return t
    }

    /// Decimals that make neighbouring tick labels differ.
    func labelDecimals() -> Int {
        if logarithmic { return 0 }
        let step = niceStep((high - low) / 6)
        return max(0, Int(ceil(-log10(step) - 1e-9)))
    }
}

/// The nice number (1, 2 or 5 x 10^k) at or above `rough`.
func niceStep(_ rough: Double) -> Double {
    if !(rough > 0) || !rough.isFinite { return 1 }
    let magnitude = pow(10, floor(log10(rough)))
    for m in [1.0, 2, 5, 10] where m * magnitude >= rough * (1 - 1e-9) { return m * magnitude }
    return 10 * magnitude
}

/// A domain around `values`, padded by `padding` of its width and widened around a single value.
func paddedRange(_ values: [Double], padding: Double = 0.05) -> (Double, Double) {
    guard let lo = values.min(), let hi = values.max() else { return (0, 1) }
    if hi - lo < 1e-12 { return (lo - max(abs(lo) * 0.1, 0.5), hi + max(abs(hi) * 0.1, 0.5)) }
    let pad = (hi - lo) * padding
    return (lo - pad, hi + pad)
}

func stepLabel(_ step: Double) -> String {
    let s = Int(step.rounded())
    if s >= 1_000_000 && s % 100_000 == 0 { return format("%gM", Double(s) / 1e6) }
    if s >= 10_000 && s % 1000 == 0 { return "\(s / 1000)k" }
    return "\(s)"
}

func xmlEscape(_ text: String) -> String {
    var out = ""
    for c in text {
        switch c {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        default: out.append(c)
        }
    }
    return out
}

/// Pixel coordinates with one decimal, as SVG wants them.
func coordinate(_ v: Double) -> String { format("%.1f", v) }

// MARK: - Chart

/// Draws the run as an SVG document. Throws if there is nothing to draw.
/// `lossLimits` pins the loss axis (either end; nil = fit the data), e.g. to see the low end of a
/// run whose first steps start near 11; points outside are clipped.
public func plotSVG(_ records: TrainingLogRecords, title: String, logSteps: Bool = false,
                    lossLimits: (low: Double?, high: Double?) = (nil, nil)) throws -> String {
    let keepStep: (Int) -> Bool = { !logSteps || $0 > 0 }
    let train = records.train.filter { keepStep($0.step) && $0.loss.isFinite }
    let validation = records.validation.filter { keepStep($0.step) && $0.loss.isFinite }
    let evaluation = records.evaluation.filter { keepStep($0.step) && $0.accuracy.isFinite }
    if train.isEmpty && validation.isEmpty && evaluation.isEmpty {
        throw LLMError("\(title): no train, val or eval lines to plot"
                       + (logSteps ? " (step 0 is left out on a log-step axis)" : ""))
    }

    let width = 900.0
    let left = 78.0, right = 24.0, top = 56.0
    let lossHeight = 380.0, evalHeight = evaluation.isEmpty ? 0.0 : 190.0, gap = evaluation.isEmpty ? 0.0 : 46.0
    let axisRoom = 52.0
    let height = top + lossHeight + gap + evalHeight + axisRoom
    let hasLoss = !train.isEmpty || !validation.isEmpty

    // A shared step axis for both panels.
    let steps = train.map { Double($0.step) } + validation.map { Double($0.step) } + evaluation.map { Double($0.step) }
    var xLow = steps.min()!, xHigh = steps.max()!
    if logSteps {
        xLow = pow(10, floor(log10(xLow)))
        xHigh = max(xHigh, xLow * 10)
    } else {
        xLow = min(xLow, 0)
        if xHigh <= xLow { xHigh = xLow + 1 }
        let step = niceStep((xHigh - xLow) / 8)
        xHigh = ceil(xHigh / step) * step
    }
    func xAxis() -> PlotAxis {
        PlotAxis(low: xLow, high: xHigh, pixelLow: left, pixelHigh: width - right, logarithmic: logSteps)
    }

    var svg = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    svg += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" "
        + "viewBox=\"0 0 \(Int(width)) \(Int(height))\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">\n"
    svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    svg += "<text x=\"\(coordinate(width / 2))\" y=\"28\" text-anchor=\"middle\" font-size=\"17\" font-weight=\"bold\">"
        + xmlEscape(title) + "</text>\n"

    /// Frame, grid, ticks and labels of one panel.
    func panel(y: PlotAxis, x: PlotAxis, yLabel: String, showXLabel: Bool) -> String {
        var s = ""
        let x0 = x.pixelLow, x1 = x.pixelHigh, y0 = y.pixelLow, y1 = y.pixelHigh  // y0 bottom, y1 top
        for t in y.ticks() {
            let py = coordinate(y.pixel(t))
            s += "<line x1=\"\(coordinate(x0))\" y1=\"\(py)\" x2=\"\(coordinate(x1))\" y2=\"\(py)\" stroke=\"#e5e5e5\"/>\n"
            s += "<text x=\"\(coordinate(x0 - 6))\" y=\"\(py)\" dy=\"4\" text-anchor=\"end\">"
                + format("%.*f", Int32(y.labelDecimals()), t) + "</text>\n"
        }
        for t in x.ticks() {
            let px = coordinate(x.pixel(t))
            s += "<line x1=\"\(px)\" y1=\"\(coordinate(y0))\" x2=\"\(px)\" y2=\"\(coordinate(y1))\" stroke=\"#f0f0f0\"/>\n"
            s += "<line x1=\"\(px)\" y1=\"\(coordinate(y0))\" x2=\"\(px)\" y2=\"\(coordinate(y0 + 5))\" stroke=\"#333\"/>\n"
            s += "<text x=\"\(px)\" y=\"\(coordinate(y0 + 18))\" text-anchor=\"middle\">" + stepLabel(t) + "</text>\n"
        }
        s += "<rect x=\"\(coordinate(x0))\" y=\"\(coordinate(y1))\" width=\"\(coordinate(x1 - x0))\" "
            + "height=\"\(coordinate(y0 - y1))\" fill=\"none\" stroke=\"#333\"/>\n"
        let midY = coordinate((y0 + y1) / 2)
        s += "<text x=\"18\" y=\"\(midY)\" text-anchor=\"middle\" transform=\"rotate(-90 18 \(midY))\">"
            + xmlEscape(yLabel) + "</text>\n"
        if showXLabel {
            s += "<text x=\"\(coordinate((x0 + x1) / 2))\" y=\"\(coordinate(y0 + 38))\" text-anchor=\"middle\">"
                + (logSteps ? "step (log scale)" : "step") + "</text>\n"
        }
        return s
    }

    func polyline(_ points: [(Double, Double)], x: PlotAxis, y: PlotAxis, className: String, color: String,
                  width: Double, opacity: Double = 1) -> String {
        if points.isEmpty { return "" }
        let list = points.map { coordinate(x.pixel($0.0)) + "," + coordinate(y.pixel($0.1)) }.joined(separator: " ")
        return "<polyline class=\"\(className)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"\(width)\" "
            + "stroke-opacity=\"\(opacity)\" stroke-linejoin=\"round\" points=\"\(list)\"/>\n"
    }

    func dots(_ points: [(Double, Double)], x: PlotAxis, y: PlotAxis, className: String, color: String) -> String {
        var s = "<g class=\"\(className)\" fill=\"\(color)\">\n"
        for (px, py) in points {
            s += "<circle cx=\"\(coordinate(x.pixel(px)))\" cy=\"\(coordinate(y.pixel(py)))\" r=\"3.5\"/>\n"
        }
        return s + "</g>\n"
    }

    /// A legend box in the corner of a panel that covers the fewest of `points` (data coordinates),
    /// top right first: (kind, color, text), kind "line" or "dot".
    func legend(_ items: [(String, String, String)], x: PlotAxis, y: PlotAxis, avoiding series: [[(Double, Double)]]) -> String {
        let rowHeight = 18.0
        let textWidth = Double(items.map { $0.2.count }.max() ?? 0) * 6.6
        let boxWidth = 40 + textWidth, boxHeight = 8 + rowHeight * Double(items.count)
        // The points and the segments between them (every 4 pixels), as the lines are drawn.
        var pixels: [(Double, Double)] = []
        for points in series { for (i, p) in points.enumerated() {
            let b = (x.pixel(p.0), y.pixel(p.1))
            if i > 0 {
                let a = (x.pixel(points[i - 1].0), y.pixel(points[i - 1].1))
                let pieces = min(Int(((b.0 - a.0) * (b.0 - a.0) + (b.1 - a.1) * (b.1 - a.1)).squareRoot() / 4), 400)
                for k in 0 ..< pieces {
                    let f = Double(k) / Double(pieces)
                    pixels.append((a.0 + f * (b.0 - a.0), a.1 + f * (b.1 - a.1)))
                }
            }
            pixels.append(b)
        } }
        let corners = [(x.pixelHigh - boxWidth - 10, y.pixelHigh + 10), (x.pixelHigh - boxWidth - 10, y.pixelLow - boxHeight - 10),
                       (x.pixelLow + 10, y.pixelHigh + 10), (x.pixelLow + 10, y.pixelLow - boxHeight - 10)]
        func covered(_ corner: (Double, Double)) -> Int {
            pixels.filter { $0.0 >= corner.0 - 4 && $0.0 <= corner.0 + boxWidth + 4
                && $0.1 >= corner.1 - 4 && $0.1 <= corner.1 + boxHeight + 4 }.count
        }
        var (bx, by) = corners[0]
        var best = covered(corners[0])
        for c in corners.dropFirst() where best > 0 {
            let n = covered(c)
            if n < best { (bx, by) = c; best = n }
        }
        var s = "<g class=\"legend\">\n<rect x=\"\(coordinate(bx))\" y=\"\(coordinate(by))\" width=\"\(coordinate(boxWidth))\" "
            + "height=\"\(coordinate(boxHeight))\" fill=\"white\" fill-opacity=\"0.9\" stroke=\"#bbb\"/>\n"
        for (i, (kind, color, text)) in items.enumerated() {
            let cy = by + 4 + rowHeight * (Double(i) + 0.5)
            s += "<line x1=\"\(coordinate(bx + 8))\" y1=\"\(coordinate(cy))\" x2=\"\(coordinate(bx + 30))\" "
                + "y2=\"\(coordinate(cy))\" stroke=\"\(color)\" stroke-width=\"2\"/>\n"
            if kind == "dot" {
                s += "<circle cx=\"\(coordinate(bx + 19))\" cy=\"\(coordinate(cy))\" r=\"3.5\" fill=\"\(color)\"/>\n"
            }
            s += "<text x=\"\(coordinate(bx + 36))\" y=\"\(coordinate(cy))\" dy=\"4\">" + xmlEscape(text) + "</text>\n"
        }
        return s + "</g>\n"
    }

    let trainColor = "#1f77b4", validationColor = "#d62728", evaluationColor = "#2ca02c"

    if hasLoss {
        let values = train.map(\.loss) + validation.map(\.loss)
        var (yLow, yHigh) = paddedRange(values)
        if let low = lossLimits.low { yLow = low }
        if let high = lossLimits.high { yHigh = high }
        if !(yHigh > yLow) { throw LLMError("loss axis: the low limit \(yLow) must be below the high limit \(yHigh)") }
        let x = xAxis()
        let y = PlotAxis(low: yLow, high: yHigh, pixelLow: top + lossHeight, pixelHigh: top)
        svg += "<g class=\"loss-panel\">\n"
        svg += panel(y: y, x: x, yLabel: "loss", showXLabel: evaluation.isEmpty)
        // Series beyond pinned limits are clipped to the frame.
        svg += "<clipPath id=\"loss-clip\"><rect x=\"\(coordinate(x.pixelLow))\" y=\"\(coordinate(top))\" "
            + "width=\"\(coordinate(x.pixelHigh - x.pixelLow))\" height=\"\(coordinate(lossHeight))\"/></clipPath>\n"
        svg += "<g clip-path=\"url(#loss-clip)\">\n"
        svg += polyline(train.map { (Double($0.step), $0.loss) }, x: x, y: y, className: "train", color: trainColor,
                        width: 1.2, opacity: 0.85)
        svg += polyline(validation.map { (Double($0.step), $0.loss) }, x: x, y: y, className: "val-line",
                        color: validationColor, width: 1.8)
        svg += dots(validation.map { (Double($0.step), $0.loss) }, x: x, y: y, className: "val", color: validationColor)
        svg += "</g>\n"
        var items: [(String, String, String)] = []
        if let last = train.last {
            items.append(("line", trainColor, "train loss (last " + format("%.4f", last.loss) + ")"))
        }
        if let best = validation.min(by: { $0.loss < $1.loss }) {
            items.append(("dot", validationColor,
                          "val loss (best " + format("%.4f", best.loss) + " at step \(best.step))"))
        }
        svg += legend(items, x: x, y: y, avoiding: [train.map { (Double($0.step), $0.loss) },
                                                  validation.map { (Double($0.step), $0.loss) }])
        svg += "</g>\n"
    }

    if !evaluation.isEmpty {
        let panelTop = hasLoss ? top + lossHeight + gap : top
        // Keep chance (0.25 for four choices) in view: it is the line to beat.
        var (yLow, yHigh) = paddedRange(evaluation.map(\.accuracy) + [0.25], padding: 0.1)
        yLow = max(yLow, 0); yHigh = min(yHigh, 1)
        let x = xAxis()
        let y = PlotAxis(low: yLow, high: yHigh, pixelLow: panelTop + evalHeight, pixelHigh: panelTop)
        svg += "<g class=\"eval-panel\">\n"
        svg += panel(y: y, x: x, yLabel: "HellaSwag accuracy", showXLabel: true)
        let chance = coordinate(y.pixel(0.25))
        svg += "<line x1=\"\(coordinate(x.pixelLow))\" y1=\"\(chance)\" x2=\"\(coordinate(x.pixelHigh))\" y2=\"\(chance)\" "
            + "stroke=\"#888\" stroke-dasharray=\"5 4\"/>\n"
        svg += "<text x=\"\(coordinate(x.pixelLow + 6))\" y=\"\(chance)\" dy=\"-4\" fill=\"#666\">chance (0.25)</text>\n"
        svg += polyline(evaluation.map { (Double($0.step), $0.accuracy) }, x: x, y: y, className: "eval-line",
                        color: evaluationColor, width: 1.8)
        svg += dots(evaluation.map { (Double($0.step), $0.accuracy) }, x: x, y: y, className: "eval",
                    color: evaluationColor)
        let best = evaluation.max(by: { $0.accuracy < $1.accuracy })!
        svg += legend([("dot", evaluationColor,
                        "HellaSwag (best " + format("%.4f", best.accuracy) + " at step \(best.step))")], x: x, y: y,
                      avoiding: [evaluation.map { (Double($0.step), $0.accuracy) }, [(xLow, 0.25), (xHigh, 0.25)]])
        svg += "</g>\n"
    }
    svg += "</svg>\n"
    return svg
}
