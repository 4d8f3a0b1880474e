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

    @Test func examplesThatDoNotFitAreSkippedAndCounted() throws {
        let model = MockBackend(config: mockConfig, B: 4, T: 4)
        model.lossOf = { _, target in Float(target) / 10 }
        let long = EvalExample(label: 0, context: [1, 2, 3], completions: [[1, 2], [1], [1], [1]])
        let short = EvalExample(label: 1, context: [1, 2], completions: [[9], [1], [8], [7]])
        let r = try evaluateMultipleChoice([long, short], model: model, B: 4, T: 4)
        #expect(r == MultipleChoiceResult(correct: 1, total: 1, skipped: 1))
        #expect(throws: LLMError.self) { _ = try evaluateMultipleChoice([short], model: model, B: 2, T: 8) }
        let empty = EvalExample(label: 0, context: [], completions: [[1], [1], [1], [1]])
        #expect(throws: LLMError.self) { _ = try evaluateMultipleChoice([empty], model: model, B: 4, T: 4) }
    }

    /// A hand-made llm.c eval file (magic 20240522) through the reader and the scorer.
    @Test func handMadeEvalFile() throws {
        let examples = [
            EvalExample(label: 1, context: [3, 4, 5], completions: [[40, 41], [2], [30], [45, 46, 47]]),
            EvalExample(label: 0, context: [8], completions: [[1, 1, 1], [9], [10, 11], [12]]),
            EvalExample(label: 2, context: [6, 6], completions: [[5], [4], [3, 50], [2, 2]]),  // 3 wins: wrong
        ]
        let path = temporaryDirectory() + "/hellaswag_tiny.bin"
        try EvalFile.write(path, examples: examples)
        let read = try EvalFile.read(path, vocabSize: mockConfig.vocabSize)
        #expect(read == examples)
        let model = MockBackend(config: mockConfig, B: 4, T: 8)
        model.lossOf = { _, target in Float(target) / 10 }
        let r = try evaluateMultipleChoice(read, model: model, B: 4, T: 8)
        #expect(r == MultipleChoiceResult(correct: 2, total: 3, skipped: 0))
    }
}
