// GPT-2 model shape and the layout of its 16 parameter tensors, as in llm.c's checkpoints.

// MARK: - Config

public struct GPT2Config: Equatable, CustomStringConvertible {
    public var maxSeqLen: Int        // maxT, e.g. 1024
    public var vocabSize: Int        // V, e.g. 50257
    public var paddedVocabSize: Int  // Vp, e.g. 50304 (rows of wte; pad rows are zero)
    public var numLayers: Int        // L
    public var numHeads: Int         // NH
    public var channels: Int         // C

    public init(maxSeqLen: Int, vocabSize: Int, paddedVocabSize: Int, numLayers: Int, numHeads: Int,
                channels: Int) {
        self.maxSeqLen = maxSeqLen
        self.vocabSize = vocabSize
        self.paddedVocabSize = paddedVocabSize
        self.numLayers = numLayers
        self.numHeads = numHeads
        self.channels = channels
    }

    /// llm.c's padding rule: round V up to a multiple of 128.
    public static func paddedVocab(_ V: Int) -> Int { (V + 127) / 128 * 128 }

    public var headSize: Int { channels / numHeads }

    public var description: String {
        "GPT-2 L=\(numLayers) NH=\(numHeads) C=\(channels) maxT=\(maxSeqLen) V=\(vocabSize) Vp=\(paddedVocabSize)"
    }

    /// Checks that the numbers can describe a GPT-2; `source` names the file or flag in errors.
    public func validate(source: String) throws {
        func bad(_ what: String) -> LLMError { LLMError("\(source): \(what)") }
        if maxSeqLen <= 0 || maxSeqLen > 1 << 20 { throw bad("max sequence length \(maxSeqLen) is out of range") }
        if vocabSize <= 0 || vocabSize > 1 << 24 { throw bad("vocab size \(vocabSize) is out of range") }
        if paddedVocabSize < vocabSize || paddedVocabSize > vocabSize + (1 << 16) {
            throw bad("padded vocab size \(paddedVocabSize) is smaller than vocab size \(vocabSize) or far above it")
        }
        if numLayers <= 0 || numLayers > 1024 { throw bad("layer count \(numLayers) is out of range") }
        if numHeads <= 0 || channels <= 0 || channels > 1 << 16 {
            throw bad("heads \(numHeads) / channels \(channels) out of range")
        }
        if channels % numHeads != 0 { throw bad("channels \(channels) not divisible by heads \(numHeads)") }
    }

    /// Slots 2-7 of llm.c's model header (maxT, V, L, NH, C, Vp), shared by our state files.
    public var headerSlots: [Int32] {
        [maxSeqLen, vocabSize, numLayers, numHeads, channels, paddedVocabSize].map { Int32($0) }
    }

    // MARK: Descriptors

    /// The GPT-2 family by depth, as llm.c's `dN` descriptors: (layers, heads, channels).
    public static let descriptorTable: [Int: (heads: Int, channels: Int)] = [
        2: (2, 128), 4: (4, 256), 6: (6, 384), 12: (12, 768), 24: (16, 1024), 36: (20, 1280),
        48: (25, 1600), 60: (30, 1920), 72: (30, 2880), 84: (36, 3456),
    ]

    /// `d12` (or `gpt2:d12`) -> GPT-2 124M shape with the GPT-2 vocabulary and maxT 1024.
    /// `d2` and `d4` are small shapes of our own for quick CPU runs and tests.
    public static func fromDescriptor(_ text: String, maxSeqLen: Int = 1024, vocabSize: Int = 50257) throws -> GPT2Config {
        var s = Substring(text)
        if s.hasPrefix("gpt2:") { s = s.dropFirst(5) }
        guard s.hasPrefix("d"), let depth = Int(s.dropFirst()), let shape = descriptorTable[depth] else {
            let known = descriptorTable.keys.sorted().map { "d\($0)" }.joined(separator: ", ")
            throw LLMError("--model \(text): not a checkpoint file or a known descriptor (\(known))")
        }
        return GPT2Config(maxSeqLen: maxSeqLen, vocabSize: vocabSize, paddedVocabSize: paddedVocab(vocabSize),
                          numLayers: depth, numHeads: shape.heads, channels: shape.channels)
    }
}

// MARK: - Parameter layout

/// The 16 parameter tensors in checkpoint order, each a contiguous slice of one flat buffer.
public enum ParameterTensor: Int, CaseIterable {
    case wte, wpe, ln1w, ln1b, qkvw, qkvb, attprojw, attprojb, ln2w, ln2b, fcw, fcb, fcprojw, fcprojb, lnfw, lnfb

    public var name: String { "\(self)" }

    /// Matrices (2-D per layer) get weight decay on the GPU path and in `llm train`.
    public var isMatrix: Bool {
        switch self {
        case .wte, .wpe, .qkvw, .attprojw, .fcw, .fcprojw: return true
        default: return false
        }
    }

    /// Whether the tensor is stacked per layer, (L, ...).
    public var isPerLayer: Bool {
        switch self {
        case .wte, .wpe, .lnfw, .lnfb: return false
        default: return true
        }
    }
}

public struct ParameterLayout {
    public let config: GPT2Config
    public let sizes: [Int]    // elements of each of the 16 tensors
    public let offsets: [Int]  // element offset of each tensor in the flat buffer
    public let count: Int      // N, with the padded vocabulary

    public init(_ c: GPT2Config) {
        config = c
        let C = c.channels, L = c.numLayers
        sizes = [
            c.paddedVocabSize * C, // wte (Vp, C)
            c.maxSeqLen * C,       // wpe (maxT, C)
            L * C, L * C,          // ln1w, ln1b (L, C)
            L * 3 * C * C,         // qkvw (L, 3C, C)
            L * 3 * C,             // qkvb (L, 3C)
            L * C * C,             // attprojw (L, C, C)
            L * C,                 // attprojb (L, C)
            L * C, L * C,          // ln2w, ln2b (L, C)
            L * 4 * C * C,         // fcw (L, 4C, C)
            L * 4 * C,             // fcb (L, 4C)
            L * C * 4 * C,         // fcprojw (L, C, 4C)
            L * C,                 // fcprojb (L, C)
            C, C,                  // lnfw, lnfb (C)
        ]
        var o: [Int] = []
        var total = 0
        for s in sizes { o.append(total); total += s }
        offsets = o
        count = total
    }

    public func size(_ t: ParameterTensor) -> Int { sizes[t.rawValue] }
    public func offset(_ t: ParameterTensor) -> Int { offsets[t.rawValue] }
    public func range(_ t: ParameterTensor) -> Range<Int> { offsets[t.rawValue] ..< offsets[t.rawValue] + sizes[t.rawValue] }

    /// Parameters without the padded rows of wte, as llm.c prints `num_parameters` for GPT-2.
    public var unpaddedCount: Int { count - (config.paddedVocabSize - config.vocabSize) * config.channels }
}
