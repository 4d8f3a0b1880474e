// The one error type of llm.swift: a message that names the file (or flag) and what is wrong.

public struct LLMError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
