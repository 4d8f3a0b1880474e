// Parity of the CPU model with PyTorch on the tiny reference (Tests/Fixtures/tiny*).

import Foundation
import LLM
import Testing
@testable import LLMCPU

@Suite struct ParityTests {
    @Test func tinyMatchesPyTorch() throws {
        let model = try CPUModel.load(path: fixturePath("tiny.bin"), B: 4, T: 32)
        let state = try DebugState(path: fixturePath("tiny_debug_state.bin"), config: model.config)
        let report = try runParityCheck(backend: model, state: state, referenceLosses: try tinyStepLosses())
        for line in report.lines { print(line) }
        #expect(report.logitsMaxAbsDiff <= 1e-4)
        #expect(report.lossDiff <= 1e-5)
        for g in report.gradients { #expect(g.relativeNorm <= 1e-4, "\(g.name)") }
        #expect(report.stepLosses.count == 10)
        for s in report.stepLosses { #expect(s.diff <= 1e-4, "step \(s.step)") }
        #expect(report.passed)
    }
}
