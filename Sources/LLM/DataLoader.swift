// Batches of (inputs, targets) from llm.c token shards, with llm.c's sampling and shuffling rules,
// so the same files and seed give the same batches as llm.c's DataLoader.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Expands a comma-separated list of glob patterns to sorted, existing paths.
public func expandGlob(_ patterns: String) throws -> [String] {
    var paths: [String] = []
    for pattern in patterns.split(separator: ",").map(String.init) where !pattern.isEmpty {
        var g = glob_t()
        defer { globfree(&g) }
        let rc = glob(pattern, 0, nil, &g)
        if rc == GLOB_NOMATCH || g.gl_pathc == 0 {
            throw LLMError("\(pattern): no file matches")
        }
        if rc != 0 { throw LLMError("\(pattern): glob failed (code \(rc))") }
        var found: [String] = []
        for i in 0 ..< Int(g.gl_pathc) {
            if let p = g.gl_pathv[i] { found.append(String(cString: p)) }
        }
        paths += found.sorted()
    }
    if paths.isEmpty { throw LLMError("\(patterns): no files given") }
    return paths
}

/// Where the tokens of one shard come from: a file, or tokens already in memory (the default
/// run tokenizes the bundled text at start-up and needs no files).
public enum TokenSource {
    case file(String)
    case memory(name: String, tokens: [UInt16])

    public var name: String {
        switch self {
        case .file(let p): return p
        case .memory(let n, _): return n
        }
    }
}

public final class DataLoader {
    public let sources: [TokenSource]
    public let B: Int
    public let T: Int
    public let rank: Int
    public let processCount: Int
    public let shuffle: Bool
    let vocabSize: Int

    // Position and shuffle state; all of it goes into training checkpoints.
    public private(set) var shardPosition = 0      // index into shardOrder
    public private(set) var samplePosition = 0     // index into sampleOrder
    public private(set) var shardOrder: [Int32]    // permutation of the shards
    public private(set) var sampleOrder: [Int32] = []  // permutation of the current shard's samples
    public private(set) var rng: MersenneTwister
    /// Completed passes over all shards.
    public private(set) var epoch = 0

    var tokens: [UInt16] = []  // the current shard
    var loadedShard = -1
    public private(set) var shardSampleCount = 0

    public private(set) var inputs: [Int32]   // (B, T)
    public private(set) var targets: [Int32]  // (B, T)

    /// Token counts of every source, validated up front (headers, sizes, at least one batch).
    public let sourceTokenCounts: [Int]

    public init(sources: [TokenSource], B: Int, T: Int, vocabSize: Int, rank: Int = 0, processCount: Int = 1,
                shuffle: Bool, seed: UInt64 = 42) throws {
        if sources.isEmpty { throw LLMError("data loader: no token files") }
        if B <= 0 || T <= 0 { throw LLMError("data loader: batch \(B) x \(T) must be positive") }
        self.sources = sources
        self.B = B
        self.T = T
        self.rank = rank
        self.processCount = processCount
        self.shuffle = shuffle
        self.vocabSize = vocabSize
        rng = MersenneTwister(seed: seed + UInt64(rank))
        shardOrder = (0 ..< sources.count).map { Int32($0) }
        inputs = [Int32](repeating: 0, count: B * T)
        targets = [Int32](repeating: 0, count: B * T)
        var counts: [Int] = []
        for s in sources {
            let n: Int
            switch s {
            case .file(let path): n = try TokenShard.readHeader(path)
            case .memory(_, let t): n = t.count
            }
            if n < processCount * B * T + 1 {
                throw LLMError("\(s.name): \(n) tokens, fewer than one batch of \(processCount) x \(B) x \(T) + 1 needs")
            }
            counts.append(n)
        }
        sourceTokenCounts = counts
        reset()
    }

    /// Samples (whole micro-batches) in a shard of `n` tokens; the tail is dropped.
    func samples(inShardOf n: Int) -> Int { (n - 1) / (processCount * B * T) }

    /// Batches in one pass over all shards.
    public var batchesPerEpoch: Int { sourceTokenCounts.map { samples(inShardOf: $0) }.reduce(0, +) }

    /// Back to the first batch; with shuffling, a new shard order (the start of a new epoch).
    public func reset() {
        shardPosition = 0
        samplePosition = 0
        if shuffle { shardOrder = rng.permutation(sources.count) }
        try? loadShard()  // sources were validated in init; a read error surfaces in nextBatch
    }

    func loadShard() throws {
        let index = Int(shardOrder[shardPosition])
        if loadedShard != index {
            switch sources[index] {
            case .file(let path): tokens = try TokenShard.read(path)
            case .memory(_, let t): tokens = t
            }
            loadedShard = index
        }
        shardSampleCount = samples(inShardOf: tokens.count)
        if shuffle { sampleOrder = rng.permutation(shardSampleCount) }
    }

    func advanceShard() throws {
        if shardPosition == sources.count - 1 {
            epoch += 1
            shardPosition = 0
            samplePosition = 0
            if shuffle { shardOrder = rng.permutation(sources.count) }
        } else {
            shardPosition += 1
            samplePosition = 0
        }
        try loadShard()
    }

    /// Fills `inputs` and `targets` with the next micro-batch.
    public func nextBatch() throws {
        if loadedShard < 0 { try loadShard() }
        if samplePosition >= shardSampleCount { try advanceShard() }
        let sample = shuffle ? Int(sampleOrder[samplePosition]) : samplePosition
        let start = sample * processCount * B * T + rank * B * T
        let V = vocabSize
        let name = sources[loadedShard].name
        // Through raw buffers: element stores into the class's arrays would each check uniqueness
        // and exclusivity (about 2 ms per 64K-token batch, while a GPU waits for the next batch).
        var bad = -1
        tokens.withUnsafeBufferPointer { tok in
            inputs.withUnsafeMutableBufferPointer { inp in
                targets.withUnsafeMutableBufferPointer { tgt in
                    for i in 0 ..< B * T {
                        let x = Int(tok[start + i]), y = Int(tok[start + i + 1])
                        if x >= V || y >= V { bad = i; return }
                        inp[i] = Int32(x)
                        tgt[i] = Int32(y)
                    }
                }
            }
        }
        if bad >= 0 {
            let x = Int(tokens[start + bad]), y = Int(tokens[start + bad + 1])
            throw LLMError("\(name): token \(max(x, y)) near position \(start + bad) is outside the vocabulary (size \(V))")
        }
        samplePosition += 1
    }

    // MARK: - Saving and restoring the position

    /// Everything needed to continue exactly where this loader is.
    public struct Position: Equatable {
        public var shardPosition: Int
        public var samplePosition: Int
        public var epoch: Int
        public var shardOrder: [Int32]
        public var sampleOrder: [Int32]
        public var rngWords: [UInt32]
        public init(shardPosition: Int, samplePosition: Int, epoch: Int, shardOrder: [Int32], sampleOrder: [Int32],
                    rngWords: [UInt32]) {
            self.shardPosition = shardPosition
            self.samplePosition = samplePosition
            self.epoch = epoch
            self.shardOrder = shardOrder
            self.sampleOrder = sampleOrder
            self.rngWords = rngWords
        }
    }

    public var position: Position {
        Position(shardPosition: shardPosition, samplePosition: samplePosition, epoch: epoch,
                 shardOrder: shardOrder, sampleOrder: sampleOrder, rngWords: rng.savedWords)
    }

    public func restore(_ p: Position) throws {
        if p.shardOrder.count != sources.count || p.shardPosition < 0 || p.shardPosition >= sources.count {
            throw LLMError("data loader: saved position has \(p.shardOrder.count) shards, the data has \(sources.count)")
        }
        shardOrder = p.shardOrder
        shardPosition = p.shardPosition
        epoch = p.epoch
        rng = try MersenneTwister(savedWords: p.rngWords)
        let index = Int(shardOrder[shardPosition])
        switch sources[index] {
        case .file(let path): tokens = try TokenShard.read(path)
        case .memory(_, let t): tokens = t
        }
        loadedShard = index
        shardSampleCount = samples(inShardOf: tokens.count)
        if shuffle {
            if p.sampleOrder.count != shardSampleCount {
                throw LLMError("data loader: saved sample order has \(p.sampleOrder.count) entries, the shard \(sources[index].name) has \(shardSampleCount) batches (different data or batch size?)")
            }
            sampleOrder = p.sampleOrder
        }
        if p.samplePosition < 0 || p.samplePosition > shardSampleCount {
            throw LLMError("data loader: saved sample position \(p.samplePosition) is outside the shard")
        }
        samplePosition = p.samplePosition
    }
}
