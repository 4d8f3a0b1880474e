// HellaSwag scoring: lowest mean completion loss wins, with llm.c's row layout.

import Testing
@testable import LLM

@Suite struct MultipleChoiceTests {
    @Test func pickUsesMeanNotSum() {
        // Completion 1 has the larger sum but the smaller mean.
        #expect(pickCompletion([[1.0], [0.5, 0.5, 0.6], [2, 2], [3]]) == 1)
        #expect(pickCompletion([[1, 1], [1], [2], [3]]) == 0)  // ties go to the lowest index
    }

    @Test func handMadeExamplesScoreAsExpected() throws {
        let model = MockBackend(config: mockConfig, B: 8, T: 8)
        // Loss of a target token is its id / 10: completions of small ids win.
        model.lossOf = { _, target in Float(target) / 10 }
        let examples = [
            EvalExample(label: 2, context: [5, 6], completions: [[30, 31], [20], [1, 2, 3], [40]]),
            EvalExample(label: 0, context: [7], completions: [[9, 9], [10, 50], [11], [12]]),
            EvalExample(label: 3, context: [1, 2, 3], completions: [[5], [6], [7], [8]]),  // wrong: 0 wins
        ]
        var calls: [Int] = []
        let r = try evaluateMultipleChoice(examples, model: model, B: 8, T: 8, progress: { done, _ in calls.append(done) })
        #expect(r.correct == 2 && r.total == 3)
        #expect(calls == [2, 3])  // two examples per batch of 8 rows
    }

    @Test func examplesThatDoNotFitAreNamed() {
        let model = MockBackend(config: mockConfig, B: 4, T: 4)
        let ex = EvalExample(label: 0, context: [1, 2, 3], completions: [[1, 2], [1], [1], [1]])
        #expect(throws: LLMError.self) { _ = try evaluateMultipleChoice([ex], model: model, B: 4, T: 4) }
        #expect(throws: LLMError.self) { _ = try evaluateMultipleChoice([ex], model: model, B: 2, T: 8) }
    }
}
