// The hand-written scanner for GPT-2's pre-tokenization pattern, on UTF-8 bytes:
//   's|'t|'re|'ve|'m|'ll|'d | ?\p{L}+ | ?\p{N}+ | ?[^\s\p{L}\p{N}]+ | \s+(?!\S) | \s+
// The alternatives are tried in that order at each position (leftmost-first, as a regex does).

// MARK: - Classes of the scalar at a byte position

/// Class and byte length of the scalar starting at p[i]. The input must be valid UTF-8.
@inline(__always) func scalarClass(_ p: UnsafePointer<UInt8>, _ i: Int,
                                   _ stage1: UnsafePointer<UInt16>, _ stage2: UnsafePointer<UInt8>) -> (UInt8, Int) {
    let b0 = UInt32(p[i])
    if b0 < 0x80 { return (stage2[Int(b0)], 1) }
    let cp: UInt32
    let len: Int
    if b0 < 0xE0 {
        cp = (b0 & 0x1F) << 6 | UInt32(p[i + 1] & 0x3F)
        len = 2
    } else if b0 < 0xF0 {
        cp = (b0 & 0x0F) << 12 | UInt32(p[i + 1] & 0x3F) << 6 | UInt32(p[i + 2] & 0x3F)
        len = 3
    } else {
        cp = (b0 & 0x07) << 18 | UInt32(p[i + 1] & 0x3F) << 12 | UInt32(p[i + 2] & 0x3F) << 6 | UInt32(p[i + 3] & 0x3F)
        len = 4
    }
    return (stage2[Int(stage1[Int(cp >> 8)]) << 8 | Int(cp & 0xFF)], len)
}

// MARK: - Scanner

/// The end (exclusive byte offset) of the pre-token that starts at p[i], i < n.
@inline(__always) func preTokenEnd(_ p: UnsafePointer<UInt8>, _ i: Int, _ n: Int,
                                   _ stage1: UnsafePointer<UInt16>, _ stage2: UnsafePointer<UInt8>) -> Int {
    let b = p[i]
    // 's 't 'm 'd 're 've 'll, case-sensitive, before anything else.
    if b == UInt8(ascii: "'") && i + 1 < n {
        let c = p[i + 1]
        if c == UInt8(ascii: "s") || c == UInt8(ascii: "t") || c == UInt8(ascii: "m") || c == UInt8(ascii: "d") {
            return i + 2
        }
        if i + 2 < n {
            let d = p[i + 2]
            if (c == UInt8(ascii: "l") && d == UInt8(ascii: "l")) || (c == UInt8(ascii: "v") && d == UInt8(ascii: "e"))
                || (c == UInt8(ascii: "r") && d == UInt8(ascii: "e")) {
                return i + 3
            }
        }
    }
    var (cls, len) = scalarClass(p, i, stage1, stage2)
    var j = i
    // ` ?X+`: one leading space joins a following letter, number or other run.
    if b == 0x20 && i + 1 < n {
        let (nextClass, nextLen) = scalarClass(p, i + 1, stage1, stage2)
        if nextClass != CharacterClass.space {
            j = i + 1
            cls = nextClass
            len = nextLen
        }
    }
    if cls != CharacterClass.space {
        j += len
        if cls == CharacterClass.letter {
            // ASCII letters are most of English text: test them without decoding.
            while j < n {
                let c = p[j] | 0x20
                if c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z") { j += 1; continue }
                if p[j] < 0x80 { return j }
                let (c2, l2) = scalarClass(p, j, stage1, stage2)
                if c2 != cls { return j }
                j += l2
            }
            return j
        }
        while j < n {
            let (c2, l2) = scalarClass(p, j, stage1, stage2)
            if c2 != cls { return j }
            j += l2
        }
        return j
    }
    // Whitespace: `\s+(?!\S)` takes the run but leaves its last scalar when non-space follows,
    // so that scalar can start the next piece; a run of one followed by non-space is `\s+`.
    var last = i
    j = i + len
    while j < n {
        let (c2, l2) = scalarClass(p, j, stage1, stage2)
        if c2 != CharacterClass.space { break }
        last = j
        j += l2
    }
    if j == n || last == i { return j }
    return last
}
