// HellaSwag validation -> llm.c's eval file (magic 20240522), as llm.c's dev/data/hellaswag.py
// writes it: context tokens, then each ending tokenized as " " + ending.

// MARK: - Tasks

public struct HellaSwagTask: Equatable, Sendable {
    public var context: String
    public var label: Int
    public var endings: [String]

    public init(context: String, label: Int, endings: [String]) {
        self.context = context
        self.label = label
        self.endings = endings
    }
}

/// Reads either format, chosen by the name: `.jsonl` is the original release (fields "ctx",
/// "label", "endings"); anything else is the text variant with 6 lines per task: context, label,
/// and the 4 endings. Errors name the file and line.
public func readHellaSwag(_ path: String, lossy: Bool = false) throws -> [HellaSwagTask] {
    let raw = try readFileBytes(path)
    if raw.isEmpty { throw LLMError("\(path): empty input") }
    let bytes = try checkedUTF8(raw, source: path, lossy: lossy)
    var lines = bytes.split(separator: 0x0A, omittingEmptySubsequences: false).map {
        String(decoding: $0.last == 0x0D ? $0.dropLast() : $0, as: UTF8.self)
    }
    if lines.last == "" { lines.removeLast() }
    var tasks: [HellaSwagTask] = []
    if path.hasSuffix(".jsonl") {
        for (i, line) in lines.enumerated() where !line.allSatisfy({ $0 == " " || $0 == "\t" }) {
            let where_ = "\(path):\(i + 1)"
            let v: JSONValue
            do { v = try JSONValue.parse(line) } catch let e as LLMError { throw LLMError("\(where_): \(e.message)") }
            guard let ctx = v["ctx"]?.stringValue else { throw LLMError("\(where_): no \"ctx\" string") }
            let label = v["label"]?.intValue ?? v["label"]?.stringValue.flatMap { Int($0) }
            guard let label else { throw LLMError("\(where_): no integer \"label\"") }
            guard let endings = v["endings"]?.arrayValue?.compactMap({ $0.stringValue }), endings.count == 4,
                  v["endings"]?.arrayValue?.count == 4 else {
                throw LLMError("\(where_): \"endings\" must be 4 strings")
            }
            guard (0..<4).contains(label) else { throw LLMError("\(where_): label \(label) is not 0...3") }
            tasks.append(HellaSwagTask(context: ctx, label: label, endings: endings))
        }
    } else {
        if lines.count % 6 != 0 {
            throw LLMError("\(path): \(lines.count) lines, not a multiple of 6 (context, label, 4 endings per task); "
                           + "the last task starts at line \(lines.count / 6 * 6 + 1)")
        }
        for t in 0..<(lines.count / 6) {
            let labelLine = lines[6 * t + 1]
            guard let label = Int(labelLine), (0..<4).contains(label) else {
                throw LLMError("\(path):\(6 * t + 2): label '\(labelLine)' is not 0...3")
            }
            tasks.append(HellaSwagTask(context: lines[6 * t], label: label, endings: Array(lines[(6 * t + 2)..<(6 * t + 6)])))
        }
    }
    if tasks.isEmpty { throw LLMError("\(path): no tasks") }
    return tasks
}

// MARK: - Eval file

/// Tokenizes tasks as llm.c does (ending tokens = encode(" " + ending)).
public func hellaSwagExamples(_ tasks: [HellaSwagTask], tokenizer: Tokenizer) -> [EvalExample] {
    let encoder = tokenizer.makeEncoder()
    func encode(_ s: String) -> [Int32] {
        var s = s
        return s.withUTF8 { encoder.encode(utf8: $0) }
    }
    return tasks.map { task in
        EvalExample(label: task.label, context: encode(task.context), completions: task.endings.map { encode(" " + $0) })
    }
}

/// Reads HellaSwag (either format) and writes the eval file; returns the number of examples.
@discardableResult
public func prepareHellaSwag(input: String, output: String, tokenizer: Tokenizer, lossy: Bool = false) throws -> Int {
    let tasks = try readHellaSwag(input, lossy: lossy)
    try EvalFile.write(output, examples: hellaSwagExamples(tasks, tokenizer: tokenizer))
    return tasks.count
}
