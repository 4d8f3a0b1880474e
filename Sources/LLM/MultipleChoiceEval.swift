// HellaSwag-style multiple-choice evaluation with llm.c's scoring: each completion is scored by
// its mean per-token loss after the shared context, and the lowest mean loss wins ("acc_norm").

/// The index of the completion with the lowest mean loss (ties go to the lowest index).
/// `rowLosses[i]` are the per-token losses of completion i's tokens.
public func pickCompletion(_ rowLosses: [[Float]]) -> Int {
    var best = 0
    var bestLoss = Float.infinity
    for (i, losses) in rowLosses.enumerated() {
        let mean = losses.isEmpty ? Float.infinity : losses.reduce(0, +) / Float(losses.count)
        if mean < bestLoss { bestLoss = mean; best = i }
    }
    return best
}

public struct MultipleChoiceResult: Equatable {
    public var correct: Int
    public var total: Int
    public var accuracy: Double { total == 0 ? 0 : Double(correct) / Double(total) }
}

/// Scores examples on `model`, packing B / choices examples per forward pass of (B, T), one row per
/// completion: the context, then the completion; the targets at the completion's positions are
/// the completion's tokens. `progress(done, total)` is called after each batch.
public func evaluateMultipleChoice(_ examples: [EvalExample], model: GPT2Backend, B: Int, T: Int,
                                   padToken: Int32 = 50256,
                                   progress: ((Int, Int) -> Void)? = nil) throws -> MultipleChoiceResult {
    guard let choices = examples.first?.completions.count, choices > 0 else { return MultipleChoiceResult(correct: 0, total: 0) }
    if B < choices { throw LLMError("--batch \(B) is too small for \(choices)-way multiple choice (needs >= \(choices))") }
    let perBatch = B / choices
    var result = MultipleChoiceResult(correct: 0, total: 0)
    var inputs = [Int32](repeating: padToken, count: B * T)
    var targets = [Int32](repeating: padToken, count: B * T)
    var start = 0
    while start < examples.count {
        let batch = examples[start ..< min(start + perBatch, examples.count)]
        for i in 0 ..< B * T { inputs[i] = padToken; targets[i] = padToken }
        var spans: [[(row: Int, from: Int, count: Int)]] = []
        for (k, ex) in batch.enumerated() {
            if ex.completions.count != choices {
                throw LLMError("multiple-choice example \(start + k): \(ex.completions.count) completions, expected \(choices)")
            }
            var exampleSpans: [(row: Int, from: Int, count: Int)] = []
            for (c, completion) in ex.completions.enumerated() {
                let row = k * choices + c
                let n = ex.context.count + completion.count
                if ex.context.isEmpty || completion.isEmpty || n > T {
                    throw LLMError("multiple-choice example \(start + k): context \(ex.context.count) + completion \(completion.count) tokens do not fit T = \(T)")
                }
                let base = row * T
                for (i, tok) in (ex.context + completion).enumerated() { inputs[base + i] = tok }
                // The token at position p predicts position p + 1: completion token j is the
                // target at position context.count - 1 + j.
                for (j, tok) in completion.enumerated() { targets[base + ex.context.count - 1 + j] = tok }
                exampleSpans.append((row, ex.context.count - 1, completion.count))
            }
            spans.append(exampleSpans)
        }
        _ = try model.forward(inputs: inputs, targets: targets, B: B, T: T)
        let losses = model.lastLosses()
        for (k, exampleSpans) in spans.enumerated() {
            let rowLosses = exampleSpans.map { s in Array(losses[(s.row * T + s.from) ..< (s.row * T + s.from + s.count)]) }
            if pickCompletion(rowLosses) == batch[batch.startIndex + k].label { result.correct += 1 }
            result.total += 1
        }
        start += batch.count
        progress?(start, examples.count)
    }
    return result
}
