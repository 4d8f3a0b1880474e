// The training-state file `state_%08d.bin`: everything besides the weights that a resumed run needs
// to continue bit for bit (AdamW moments, master weights, RNG states, data loader position and
// shuffle state, outlier windows), with a checksum so a damaged file is refused, never half-used.
//
// API:
//   var state = TrainingState(step: s, config: config, m: m, v: v)   // then fill the optional parts
//   try state.write("out/state_00000100.bin")                          // atomic: .tmp, fsync, rename
//   let back = try TrainingState.read("out/state_00000100.bin", config: config)
//   CheckpointDirectory (CheckpointDirectory.swift) writes it beside model_%08d.bin with a DONE marker.
//
// File format (ours; llm.c's 20240527 state file is reference section 1.5 and is not read here).
// Little-endian. A 256 x int32 header (1024 bytes), the payload, then an 8-byte trailer.
//   header int32 slot: 0 magic 20241125 | 1 version 1 | 2 maxT | 3 V | 4 L | 5 NH | 6 C | 7 Vp
//     (slots 2-7 as in the model checkpoint) | 8 process count | 9 process rank | 10 master weights 0/1
//     | 11 B | 12 T (0 = not recorded) | 13 R = count of UInt64 RNG states | 14 W = count of UInt32
//     shuffle-RNG words | 15 P = shard-order count | 16 Q = sample-order count | 17 D = count of
//     Float64 outlier-detector values | 18-19 zero
//   header int64 at int32 slots: 20 step | 22 N parameters | 24 S optimizer slice length (= N with
//     one process; a rank's share under ZeRO-1) | 26 loader shard index | 28 loader sample index |
//     30 checksum (UInt64) of the model file written beside this state (0 = none)
//   payload, back to back: m fp32[S] | v fp32[S] | master fp32[S] if slot 10 | RNG UInt64[R] |
//     shuffle-RNG UInt32[W] | shard order Int32[P] | sample order Int32[Q] | detectors Float64[D]
//   trailer: UInt64 checksum of every byte before it (header and payload).
// Checksum ("FNV-4x64", ours): four 64-bit lanes start at 0xcbf29ce484222325 ^ lane; each 32-byte
// block, read as four little-endian UInt64 words w0..w3, updates lane i to
// rotl((lane_i ^ w_i) * 0x100000001b3, 29); a final partial block is zero-padded. The result is
// FNV-1a 64 over the bytes of lane 0..3 then of the total byte count, all little-endian. Each step
// is invertible, so any single damaged byte changes the result; four lanes keep it at memory speed.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public struct TrainingState: Equatable {
    public static let magic: Int32 = 20241125
    public static let version: Int32 = 1
    /// llm.c's own state file, which we recognise only to say so.
    public static let llmcMagic: Int32 = 20240527

    /// Updates done; the resumed loop starts at this step (as llm.c's `step` in its state file).
    public var step: Int
    public var config: GPT2Config
    public var processCount = 1
    public var processRank = 0
    /// The run's micro-batch shape, so a resume with another shape can be refused (0 = not recorded).
    public var batchSize = 0
    public var sequenceLength = 0

    public var m: [Float]                   // (S) AdamW first moment
    public var v: [Float]                   // (S) AdamW second moment
    public var masterWeights: [Float]?      // (S) fp32 master weights, when the run keeps them

    /// xorshift states (stochastic rounding, sampling...); their order is the training loop's.
    public var randomStates: [UInt64] = []
    /// Train loader position: the shard it reads and the next sample in that shard.
    public var loaderShardIndex = 0
    public var loaderSampleIndex = 0
    /// Shuffle state, opaque to us: the mt19937 words and the current permutations (empty when the
    /// loader does not shuffle). The loader serialises itself into these.
    public var shuffleRandomState: [UInt32] = []
    public var shardOrder: [Int32] = []
    public var sampleOrder: [Int32] = []
    /// Outlier-detector snapshots back to back (OutlierDetector.snapshot), empty if not kept.
    public var outlierDetectors: [Double] = []
    /// Checksum of the model file saved with this state; CheckpointDirectory sets and checks it.
    public var modelChecksum: UInt64 = 0

    public init(step: Int, config: GPT2Config, m: [Float], v: [Float], masterWeights: [Float]? = nil) {
        self.step = step
        self.config = config
        self.m = m
        self.v = v
        self.masterWeights = masterWeights
    }

    /// N of the config: the length of m, v and master weights with one process.
    public var parameterCount: Int { ParameterLayout(config).count }
}

// MARK: - Writing

extension TrainingState {
    func header() -> [Int32] {
        var h = [Int32](repeating: 0, count: llmcHeaderInts)
        func put64(_ slot: Int, _ value: UInt64) {
            h[slot] = Int32(bitPattern: UInt32(truncatingIfNeeded: value))
            h[slot + 1] = Int32(bitPattern: UInt32(truncatingIfNeeded: value >> 32))
        }
        h[0] = Self.magic
        h[1] = Self.version
        h.replaceSubrange(2 ..< 8, with: config.headerSlots)
        h[8] = Int32(processCount)
        h[9] = Int32(processRank)
        h[10] = masterWeights == nil ? 0 : 1
        h[11] = Int32(batchSize)
        h[12] = Int32(sequenceLength)
        h[13] = Int32(randomStates.count)
        h[14] = Int32(shuffleRandomState.count)
        h[15] = Int32(shardOrder.count)
        h[16] = Int32(sampleOrder.count)
        h[17] = Int32(outlierDetectors.count)
        put64(20, UInt64(step))
        put64(22, UInt64(parameterCount))
        put64(24, UInt64(m.count))
        put64(26, UInt64(loaderShardIndex))
        put64(28, UInt64(loaderSampleIndex))
        put64(30, modelChecksum)
        return h
    }

    /// Writes the state atomically (temporary name, fsync, rename). Inconsistent lengths are an error.
    public func write(_ path: String) throws {
        if v.count != m.count || (masterWeights != nil && masterWeights!.count != m.count) {
            throw LLMError("\(path): m, v and master weights must have the same length "
                           + "(\(m.count), \(v.count), \(masterWeights?.count ?? m.count))")
        }
        if processCount == 1 && m.count != parameterCount {
            throw LLMError("\(path): optimizer state has \(m.count) values, the model has \(parameterCount) parameters")
        }
        let counts = [randomStates.count, shuffleRandomState.count, shardOrder.count, sampleOrder.count,
                      outlierDetectors.count]
        if counts.contains(where: { $0 > Int(Int32.max) }) || step < 0 || loaderShardIndex < 0 || loaderSampleIndex < 0 {
            throw LLMError("\(path): step, loader position or array lengths out of range")
        }
        let w = try AtomicFileWriter(path: path)
        do {
            var checksum = Checksum64()
            func emit(_ bytes: UnsafeRawBufferPointer) throws {
                checksum.update(bytes)
                try w.write(bytes)
            }
            try header().map { $0.littleEndian }.withUnsafeBytes(emit)
            try m.withUnsafeBytes(emit)
            try v.withUnsafeBytes(emit)
            if let master = masterWeights { try master.withUnsafeBytes(emit) }
            try randomStates.withUnsafeBytes(emit)
            try shuffleRandomState.withUnsafeBytes(emit)
            try shardOrder.withUnsafeBytes(emit)
            try sampleOrder.withUnsafeBytes(emit)
            try outlierDetectors.withUnsafeBytes(emit)
            try w.write([checksum.finalize().littleEndian])
            try w.commit()
        } catch {
            w.abandon()
            throw error
        }
    }
}

// MARK: - Reading

extension TrainingState {
    /// Reads and verifies a state file. With `config`, a state written for another model is refused.
    /// Errors name the file and say what is wrong (truncated, damaged, mismatched).
    public static func read(_ path: String, config expected: GPT2Config? = nil) throws -> TrainingState {
        guard let size = fileSize(path) else { throw LLMError("\(path): no such file") }
        let minimum = llmcHeaderBytes + 8
        if size < minimum {
            throw LLMError("\(path): \(size) bytes, too short for a training state (truncated)")
        }
        guard let f = fopen(path, "rb") else {
            throw LLMError("\(path): cannot open (\(String(cString: strerror(errno))))")
        }
        defer { fclose(f) }

        var header = [Int32](repeating: 0, count: llmcHeaderInts)
        try header.withUnsafeMutableBytes {
            try readExactly(f, $0.baseAddress!, count: llmcHeaderBytes, offset: 0, path: path)
        }
        header = header.map { Int32(littleEndian: $0) }
        func get64(_ slot: Int) -> UInt64 {
            UInt64(UInt32(bitPattern: header[slot])) | UInt64(UInt32(bitPattern: header[slot + 1])) << 32
        }
        if header[0] == llmcMagic {
            throw LLMError("\(path): this is llm.c's training state (magic \(llmcMagic)); llm.swift resumes "
                           + "only from its own state files (magic \(magic))")
        }
        if header[0] != magic {
            throw LLMError("\(path): bad magic \(header[0]), expected \(magic) (an llm.swift training state)")
        }
        if header[1] != version {
            throw LLMError("\(path): unsupported training-state version \(header[1]), expected \(version)")
        }

        // Sizes first, so a short file is reported as truncated rather than as damaged.
        let counts = (13 ... 17).map { Int(header[$0]) }
        let S = get64(24), N = get64(22)
        if counts.contains(where: { $0 < 0 }) || S > UInt64(1) << 40 || N > UInt64(1) << 40 || header[10] & ~1 != 0 {
            throw LLMError("\(path): header holds impossible lengths (damaged)")
        }
        let slice = Int(S)
        let floatArrays = header[10] == 1 ? 3 : 2
        let payload = floatArrays * slice * 4 + counts[0] * 8 + counts[1] * 4 + counts[2] * 4 + counts[3] * 4
            + counts[4] * 8
        let expectedSize = llmcHeaderBytes + payload + 8
        if size != expectedSize {
            throw LLMError("\(path): file is \(size) bytes but its header needs \(expectedSize) "
                           + (size < expectedSize ? "(truncated)" : "(trailing bytes or damaged header)"))
        }

        // Then the checksum over everything before the trailer.
        var checksum = Checksum64()
        var stored: UInt64 = 0
        try withUnsafeMutableBytes(of: &stored) {
            try readExactly(f, $0.baseAddress!, count: 8, offset: size - 8, path: path)
        }
        stored = UInt64(littleEndian: stored)
        try checksumFileRange(f, path: path, count: size - 8, into: &checksum)
        if checksum.finalize() != stored {
            throw LLMError("\(path): checksum mismatch: the file is damaged; delete this checkpoint's "
                           + "DONE_ marker to resume from the one before")
        }

        // Only now is the header trusted.
        let config = GPT2Config(maxSeqLen: Int(header[2]), vocabSize: Int(header[3]),
                                paddedVocabSize: Int(header[7]), numLayers: Int(header[4]),
                                numHeads: Int(header[5]), channels: Int(header[6]))
        try config.validate(source: path)
        if let expected, expected != config {
            throw LLMError("\(path): written for \(config), but this run's model is \(expected)")
        }
        let layoutCount = ParameterLayout(config).count
        if Int(N) != layoutCount {
            throw LLMError("\(path): records \(N) parameters, its config needs \(layoutCount)")
        }
        let processCount = Int(header[8]), processRank = Int(header[9])
        if processCount < 1 || processRank < 0 || processRank >= processCount
            || (processCount == 1 && slice != layoutCount) {
            throw LLMError("\(path): optimizer state of \(slice) values for process \(processRank) of "
                           + "\(processCount) does not fit \(layoutCount) parameters")
        }

        var state = TrainingState(step: Int(get64(20)), config: config, m: [], v: [])
        state.processCount = processCount
        state.processRank = processRank
        state.batchSize = Int(header[11])
        state.sequenceLength = Int(header[12])
        state.loaderShardIndex = Int(get64(26))
        state.loaderSampleIndex = Int(get64(28))
        state.modelChecksum = get64(30)

        var offset = llmcHeaderBytes
        func array<T>(_ count: Int, _: T.Type) throws -> [T] {
            var a = [T](unsafeUninitializedCapacity: count) { _, n in n = count }
            let bytes = count * MemoryLayout<T>.stride
            if bytes > 0 {
                try a.withUnsafeMutableBytes { try readExactly(f, $0.baseAddress!, count: bytes, offset: offset, path: path) }
            }
            offset += bytes
            return a
        }
        state.m = try array(slice, Float.self)
        state.v = try array(slice, Float.self)
        if header[10] == 1 { state.masterWeights = try array(slice, Float.self) }
        state.randomStates = try array(counts[0], UInt64.self)
        state.shuffleRandomState = try array(counts[1], UInt32.self)
        state.shardOrder = try array(counts[2], Int32.self)
        state.sampleOrder = try array(counts[3], Int32.self)
        state.outlierDetectors = try array(counts[4], Double.self)
        return state
    }
}

// MARK: - Checksum

/// The state file's checksum (see the top of this file), fed in pieces of any size.
public struct Checksum64 {
    static let prime: UInt64 = 0x100000001b3
    static let basis: UInt64 = 0xcbf29ce484222325

    var lanes: (UInt64, UInt64, UInt64, UInt64) = (basis, basis ^ 1, basis ^ 2, basis ^ 3)
    var pending = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))  // a partial 32-byte block
    var pendingCount = 0
    var total: UInt64 = 0

    public init() {}

    @inline(__always) static func mix(_ lane: UInt64, _ word: UInt64) -> UInt64 {
        let x = (lane ^ word) &* prime
        return (x << 29) | (x >> 35)
    }

    @inline(__always) mutating func block(_ p: UnsafeRawPointer) {
        lanes.0 = Self.mix(lanes.0, UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 0, as: UInt64.self)))
        lanes.1 = Self.mix(lanes.1, UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
        lanes.2 = Self.mix(lanes.2, UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 16, as: UInt64.self)))
        lanes.3 = Self.mix(lanes.3, UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 24, as: UInt64.self)))
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard var p = bytes.baseAddress else { return }
        var n = bytes.count
        total &+= UInt64(n)
        // Top up a partial block first.
        if pendingCount > 0 {
            let take = min(32 - pendingCount, n)
            withUnsafeMutableBytes(of: &pending) { buf in
                buf.baseAddress!.advanced(by: pendingCount).copyMemory(from: p, byteCount: take)
            }
            pendingCount += take
            p += take
            n -= take
            if pendingCount < 32 { return }
            var full = pending
            withUnsafeBytes(of: &full) { block($0.baseAddress!) }
            pendingCount = 0
        }
        // Whole blocks straight from the input, lanes kept in locals for speed.
        var l = lanes
        while n >= 32 {
            l.0 = Self.mix(l.0, UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 0, as: UInt64.self)))
            l.1 = Self.mix(l.1, UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
            l.2 = Self.mix(l.2, UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 16, as: UInt64.self)))
            l.3 = Self.mix(l.3, UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 24, as: UInt64.self)))
            p += 32
            n -= 32
        }
        lanes = l
        if n > 0 {
            pending = (0, 0, 0, 0)
            withUnsafeMutableBytes(of: &pending) { $0.baseAddress!.copyMemory(from: p, byteCount: n) }
            pendingCount = n
        }
    }

    public mutating func update(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { update($0) }
    }

    /// The checksum of everything fed so far (does not change the running state).
    public func finalize() -> UInt64 {
        var l = lanes
        if pendingCount > 0 {
            var last = pending  // zero-padded past pendingCount
            withUnsafeBytes(of: &last) { b in
                let p = b.baseAddress!
                l.0 = Self.mix(l.0, UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 0, as: UInt64.self)))
                l.1 = Self.mix(l.1, UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
                l.2 = Self.mix(l.2, UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 16, as: UInt64.self)))
                l.3 = Self.mix(l.3, UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 24, as: UInt64.self)))
            }
        }
        var h = Self.basis
        for word in [l.0, l.1, l.2, l.3, total] {
            for i in 0 ..< 8 { h = (h ^ ((word >> (8 * UInt64(i))) & 0xff)) &* Self.prime }
        }
        return h
    }
}

/// Feeds the first `count` bytes of an open file into `checksum`, in 4 MiB pieces.
func checksumFileRange(_ f: UnsafeMutablePointer<FILE>, path: String, count: Int,
                       into checksum: inout Checksum64) throws {
    let chunk = 4 << 20
    var buffer = [UInt8](repeating: 0, count: min(chunk, max(count, 1)))
    var offset = 0
    while offset < count {
        let n = min(buffer.count, count - offset)
        try buffer.withUnsafeMutableBytes {
            try readExactly(f, $0.baseAddress!, count: n, offset: offset, path: path)
            checksum.update(UnsafeRawBufferPointer(rebasing: $0[0 ..< n]))
        }
        offset += n
    }
}

/// The checksum of a whole file (used for the model file saved beside a state).
public func fileChecksum(_ path: String) throws -> UInt64 {
    guard let size = fileSize(path) else { throw LLMError("\(path): no such file") }
    guard let f = fopen(path, "rb") else {
        throw LLMError("\(path): cannot open (\(String(cString: strerror(errno))))")
    }
    defer { fclose(f) }
    var checksum = Checksum64()
    try checksumFileRange(f, path: path, count: size, into: &checksum)
    return checksum.finalize()
}
