// Unicode character classes of GPT-2's pre-tokenization pattern (letter, number, whitespace, other)
// as a two-stage lookup table built once from the generated ranges in UnicodeTables.swift.

// MARK: - Classes

/// The four classes the pattern distinguishes; `other` is `[^\s\p{L}\p{N}]`.
enum CharacterClass {
    static let other: UInt8 = 0
    static let letter: UInt8 = 1
    static let number: UInt8 = 2
    static let space: UInt8 = 3
}

// MARK: - Two-stage table

/// stage1[cp >> 8] picks a 256-entry block of stage2; identical blocks are shared, so the table
/// for all 0x110000 code points takes about 40 KB. Block 0 (ASCII and Latin-1) comes first, so
/// `stage2[byte]` is the class of an ASCII byte.
final class CharacterClassTable: @unchecked Sendable {
    let stage1: UnsafeMutablePointer<UInt16>  // (0x1100,)
    let stage2: UnsafeMutablePointer<UInt8>   // (blocks * 256,)
    let blockCount: Int

    static let shared = CharacterClassTable()

    private init() {
        let codePoints = 0x110000
        var flat = [UInt8](repeating: CharacterClass.other, count: codePoints)
        func fill(_ ranges: [UInt32], _ c: UInt8) {
            var i = 0
            while i < ranges.count {
                for v in Int(ranges[i])...Int(ranges[i + 1]) { flat[v] = c }
                i += 2
            }
        }
        fill(unicodeLetterRanges, CharacterClass.letter)
        fill(unicodeNumberRanges, CharacterClass.number)
        fill(unicodeWhitespaceRanges, CharacterClass.space)

        let blocksInStage1 = codePoints >> 8
        stage1 = .allocate(capacity: blocksInStage1)
        var unique: [[UInt8]: Int] = [:]
        var blocks: [UInt8] = []
        for b in 0..<blocksInStage1 {
            let block = Array(flat[(b << 8)..<((b + 1) << 8)])
            if let index = unique[block] {
                stage1[b] = UInt16(index)
            } else {
                let index = unique.count
                unique[block] = index
                blocks += block
                stage1[b] = UInt16(index)
            }
        }
        blockCount = unique.count
        stage2 = .allocate(capacity: blocks.count)
        stage2.initialize(from: blocks, count: blocks.count)
    }

    /// The class of a code point (scalar value).
    @inline(__always) func classOf(_ cp: UInt32) -> UInt8 {
        stage2[Int(stage1[Int(cp >> 8)]) << 8 | Int(cp & 0xFF)]
    }
}
