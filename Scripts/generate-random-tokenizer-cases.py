#!/usr/bin/env python3
"""Writes Tests/LLMTests/TokenizerRandomCasesTests.swift: 200 random strings over exotic Unicode
classes with ids from reference-gpt2-encode.py. Usage: generate-random-tokenizer-cases.py [DATA_DIR]
(DATA_DIR holds encoder.json and vocab.bpe; default ../shared/data beside the repository)."""
import json, random, importlib.util
import os, sys
here = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("ref", os.path.join(here, "reference-gpt2-encode.py")); ref = importlib.util.module_from_spec(spec); spec.loader.exec_module(ref)
enc = ref.Encoder(sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, '../../shared/data'))
pools = [
 "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", "!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~",
 " ", "  ", "\n", "\t", "\r\n", "\u00a0", "\u3000", "\u2028", "\u0085", "\u1680", "\u000b\u000c", "\u001c\u001d\u001e\u001f",
 "'", "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "\u2019",
 "\u0301\u0308\u20dd", "éèñüßøåÆŒ", "αβγΔΩ", "жзийЖ", "中文字漢", "한국어", "ﾊﾝｶｸ", "عربية", "עברית", "हिन्दी", "ไทย",
 "٠١٢٣", "²³¹¼½¾", "ⅠⅡⅫⅻ", "ʰʲˀ", "ᵃᵇ", "😀👍🏽👨‍👩‍👧🇫🇷", "𝔘𝔫𝔦", "𐐀𐐁", "\U00010FFFF"[:1], "\ufffd", "\u200b\u200d\ufeff",
 "\u0000\u0001", "\u0080\u009f", "…—–", "₀₁₂", "①②", "〇", "ǅǈ",
]
rng = random.Random(424242)
out = []
for i in range(200):
    n = rng.randint(1, 24)
    s = "".join(rng.choice(rng.choice(pools)) if rng.random() < 0.5 else rng.choice(pools) for _ in range(n))
    out.append(json.dumps({"text": s, "ids": enc.encode(s)}, ensure_ascii=True))
body = "\n".join(out)
assert '"""#' not in body
src = '''// 200 random strings over exotic Unicode classes (Nd/Nl/No digits, Lm/Lo letters, combining marks,
// every White_Space character, C0/C1 controls, contractions) with ids from the independent
// regex-based GPT-2 encoder (Scripts/reference-gpt2-encode.py, which equals tiktoken on the 437
// fixture cases and on all of Tiny Shakespeare). Generated with random.Random(424242).

import Testing
@testable import LLM

@Test func tokenizerMatchesTheReferenceOnRandomExoticStrings() throws {
    var failures = 0
    for line in randomExoticCases.split(separator: "\\n") {
        let record = try JSONValue.parse(String(line))
        let text = try #require(record["text"]?.stringValue)
        let expected = try #require(record["ids"]?.arrayValue).map { Int32($0.intValue!) }
        let got = gpt2Tokenizer.encode(text)
        if got != expected {
            failures += 1
            Issue.record("\\(text.debugDescription): got \\(got), expected \\(expected)")
        }
    }
    #expect(failures == 0)
}

let randomExoticCases = #"""
''' + body + '''
"""#
'''
open(os.path.join(here, '../Tests/LLMTests/TokenizerRandomCasesTests.swift'), 'w').write(src)
