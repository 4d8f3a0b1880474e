// `llm plot`'s SVG: well-formed XML with one mark per logged point.

import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing
@testable import LLM

/// Counts elements while checking that the document parses; per-class counts of circles and the
/// number of coordinate pairs of each polyline.
private final class SVGCounter: NSObject, XMLParserDelegate {
    var circles: [String: Int] = [:]
    var polylinePoints: [String: Int] = [:]
    var groupClasses: [String?] = []
    var rootName: String?

    func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                attributes: [String: String] = [:]) {
        if rootName == nil { rootName = name }
        switch name {
        case "g": groupClasses.append(attributes["class"])
        case "circle":
            let owner = groupClasses.last(where: { $0 != nil }) ?? nil
            circles[owner ?? "", default: 0] += 1
        case "polyline":
            polylinePoints[attributes["class"] ?? "", default: 0] +=
                (attributes["points"] ?? "").split(separator: " ").count
        default: break
        }
    }

    func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
        if name == "g" { groupClasses.removeLast() }
    }
}

private func parseSVG(_ svg: String) -> SVGCounter? {
    let parser = XMLParser(data: Data(svg.utf8))
    let counter = SVGCounter()
    parser.delegate = counter
    return parser.parse() ? counter : nil
}

private func smallLog() -> TrainingLogRecords {
    var r = TrainingLogRecords()
    r.train = [(0, 10.9), (1, 9.8), (2, 8.7), (3, 7.9), (4, 7.5)]
    r.validation = [(0, 11.0), (4, 7.6)]
    r.evaluation = [(4, 0.26)]
    return r
}

@Test func plotIsWellFormedWithOneMarkPerPoint() throws {
    let svg = try plotSVG(smallLog(), title: "run <a & b>")
    let c = try #require(parseSVG(svg))
    #expect(c.rootName == "svg")
    #expect(c.polylinePoints["train"] == 5)
    #expect(c.polylinePoints["val-line"] == 2)
    #expect(c.circles["val"] == 2)
    #expect(c.circles["eval"] == 1)
    #expect(svg.contains("run &lt;a &amp; b&gt;"))
    #expect(svg.contains("HellaSwag accuracy"))
    #expect(svg.contains("val loss (best 7.6000 at step 4)"))
}

@Test func plotWithoutEvalHasOnePanelAndLogStepsDropStepZero() throws {
    var r = smallLog()
    r.evaluation = []
    let linear = try plotSVG(r, title: "t")
    #expect(!linear.contains("eval-panel"))
    let log = try plotSVG(r, title: "t", logSteps: true)
    let c = try #require(parseSVG(log))
    #expect(c.polylinePoints["train"] == 4)   // step 0 has no place on a log axis
    #expect(c.circles["val"] == 1)
    #expect(log.contains("step (log scale)"))
}

@Test func plotOfNothingIsAnError() {
    #expect(throws: LLMError.self) { _ = try plotSVG(TrainingLogRecords(), title: "empty") }
}

@Test func plotFromAWrittenLog() throws {
    let dir = TestDirectory()
    let log = try TrainingLog(path: dir.file("main.log"))
    for s in 0 ..< 20 { log.train(step: s, loss: 11 - Float(s) * 0.3, learningRate: 1e-3, gradNorm: 1) }
    for s in stride(from: 0, through: 20, by: 5) { log.validation(step: s, loss: 11 - Float(s) * 0.28) }
    log.close()
    let svg = try plotSVG(try TrainingLog.read(dir.file("main.log")), title: "written")
    let c = try #require(parseSVG(svg))
    #expect(c.polylinePoints["train"] == 20)
    #expect(c.circles["val"] == 5)
}

@Test func niceTicks() {
    #expect(niceStep(0.7) == 1)
    #expect(niceStep(1.3) == 2)
    #expect(niceStep(3) == 5)
    #expect(niceStep(230) == 500)
    let axis = PlotAxis(low: 0, high: 5000, pixelLow: 0, pixelHigh: 100)
    #expect(axis.ticks() == [0, 1000, 2000, 3000, 4000, 5000])
    let logAxis = PlotAxis(low: 1, high: 5000, pixelLow: 0, pixelHigh: 100, logarithmic: true)
    #expect(logAxis.ticks() == [1, 10, 100, 1000])
}
