// Tests for the Foundation-free JSON parser: every value type, escapes, surrogate pairs, errors.

import Testing
@testable import LLM

@Test func jsonParsesEveryValueType() throws {
    let v = try JSONValue.parse(#" {"a": [1, -2.5, 3e2, true, false, null], "b": {"c": "d"}, "e": 0} "#)
    #expect(v["a"]?[0]?.intValue == 1)
    #expect(v["a"]?[1]?.doubleValue == -2.5)
    #expect(v["a"]?[2]?.doubleValue == 300)
    #expect(v["a"]?[3]?.boolValue == true)
    #expect(v["a"]?[4]?.boolValue == false)
    #expect(v["a"]?[5]?.isNull == true)
    #expect(v["b"]?["c"]?.stringValue == "d")
    #expect(v["e"]?.intValue == 0)
    #expect(v["missing"] == nil)
    #expect(v["a"]?.arrayValue?.count == 6)
}

@Test func jsonStringEscapesAndSurrogatePairs() throws {
    let v = try JSONValue.parse(#""q\" b\\ s\/ \b\f\n\r\t \u00e9 \u2028 \ud83d\ude00 end""#)
    #expect(v.stringValue == "q\" b\\ s/ \u{8}\u{C}\n\r\t é \u{2028} 😀 end")
    // A lone surrogate cannot be UTF-8, so it becomes U+FFFD rather than failing the document.
    #expect(try JSONValue.parse(#""\ud800x""#).stringValue == "\u{FFFD}x")
    // Raw UTF-8 passes through unchanged.
    #expect(try JSONValue.parse("\"héllo 世界\"").stringValue == "héllo 世界")
}

@Test func jsonRoundTripsThroughDescription() throws {
    let text = #"{"a":[1,2.5,"x\ny"],"b":null,"c":true}"#
    let v = try JSONValue.parse(text)
    #expect(v.description == text)
    #expect(try JSONValue.parse(v.description) == v)
}

@Test func jsonErrorsNameLineAndColumn() {
    let bad = ["", "[1,]", "{\"a\" 1}", "01", "1.", "\"abc", "[1] x", "tru", "\"\\x\"", "{1:2}", "-"]
    for text in bad {
        #expect(throws: LLMError.self) { try JSONValue.parse(text) }
    }
    do {
        _ = try JSONValue.parse("{\n  \"a\": ?\n}")
        Issue.record("expected an error")
    } catch let e as LLMError {
        #expect(e.message.hasPrefix("JSON line 2 column 8"))
    } catch {
        Issue.record("unexpected error \(error)")
    }
}

@Test func jsonReadsTheTinyStepsFixture() throws {
    var parts = "\(#filePath)".split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(2)
    let path = parts.joined(separator: "/") + "/Fixtures/tiny_steps.json"
    let v = try JSONValue.parse(bytes: readFileBytes(path))
    #expect(v["vocab_size"]?.intValue == 500)
    #expect(v["adamw"]?["eps"]?.doubleValue == 1e-08)
    #expect(v["hf_max_abs_logit_diff"]?.doubleValue == 2.384185791015625e-07)
    #expect(v["losses_10_steps"]?.arrayValue?.count == 10)
    #expect(v["losses_10_steps"]?[0]?.doubleValue == 6.252352714538574)
    #expect(v["adamw"]?["note"]?.stringValue?.hasPrefix("weight decay") == true)
}
