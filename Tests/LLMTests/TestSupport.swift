// Helpers shared by the LLM tests: fixture paths, temporary files, max differences.

import Foundation
import LLM

/// The repository root, found from this file's path (Tests/LLMTests/TestSupport.swift).
let repoRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0 ..< 3 { url.deleteLastPathComponent() }
    return url.path
}()

func fixture(_ name: String) -> String { repoRoot + "/Tests/Fixtures/" + name }

/// A fresh temporary directory for one test.
func temporaryDirectory(_ tag: String = #function) -> String {
    let base = FileManager.default.temporaryDirectory.path
    let clean = tag.filter { $0.isLetter || $0.isNumber }
    let dir = "\(base)/llm-swift-tests-\(clean)-\(UInt32.random(in: 0 ... .max))"
    try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    return dir
}

func writeBytes(_ path: String, _ bytes: [UInt8]) {
    FileManager.default.createFile(atPath: path, contents: Data(bytes))
}

func int32Bytes(_ values: [Int32]) -> [UInt8] {
    values.withUnsafeBytes { Array($0) }
}

func maxAbsDiff(_ a: [Float], _ b: [Float]) -> Float {
    precondition(a.count == b.count)
    var m: Float = 0
    for i in 0 ..< a.count { m = max(m, abs(a[i] - b[i])) }
    return m
}
