// A run's checkpoint folder: `model_%08d.bin` (llm.c's model file), `state_%08d.bin` (our
// TrainingState) and an empty `DONE_%08d` written last, so a kill at any moment leaves the previous
// complete checkpoint intact; with rotation that keeps the last K and every M-th step forever.
//
// API:
//   let checkpoints = try CheckpointDirectory("out", keepLast: 3, keepEvery: 1000)  // mkdir -p
//   try checkpoints.save(state: state, parameters: params, precision: .bf16)  // step = state.step
//   if let c = try checkpoints.latestComplete(config: config) {   // nil: nothing to resume
//       let params = try c.readParameters()   // or c.state.masterWeights when kept
//       ... c.state.m, c.state.v, c.state.randomStates, loader position ..., start at c.step
//   }
//   try checkpoints.completeSteps()          // steps with a DONE marker, ascending
//
// Order of a save: DONE_s removed if present -> model_s (tmp, fsync, rename) -> its checksum goes
// into the state -> state_s (same) -> fsync the folder -> DONE_s (same) -> fsync -> rotation.
// Rotation deletes DONE first, so a kill mid-deletion leaves an unmarked, ignored checkpoint.
// latestComplete() skips markers whose files are missing (saying so in `notes`) but refuses a
// damaged or mismatched checkpoint with an error that names the file: resuming from an older one
// silently would hide real damage; the message says how to fall back deliberately.

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public struct CheckpointDirectory {
    public let path: String
    /// --keep K: keep the K newest complete checkpoints (0 keeps all).
    public var keepLast: Int
    /// --keep-every M: steps that are multiples of M are never deleted (0 = none are special).
    public var keepEvery: Int

    public init(_ path: String, keepLast: Int = 0, keepEvery: Int = 0) throws {
        if keepLast < 0 { throw LLMError("--keep \(keepLast): must be >= 0 (0 keeps every checkpoint)") }
        if keepEvery < 0 { throw LLMError("--keep-every \(keepEvery): must be >= 0") }
        self.path = path
        self.keepLast = keepLast
        self.keepEvery = keepEvery
        try makeDirectories(path)
    }

    // MARK: - Names

    public func modelPath(step: Int) -> String { joinPath(path, format("model_%08ld.bin", step)) }
    public func statePath(step: Int) -> String { joinPath(path, format("state_%08ld.bin", step)) }
    public func donePath(step: Int) -> String { joinPath(path, format("DONE_%08ld", step)) }

    /// The step of a name `prefix` + digits + `suffix` (e.g. "model_00000100.bin" -> 100).
    static func step(of name: String, prefix: String, suffix: String) -> Int? {
        guard name.hasPrefix(prefix), name.hasSuffix(suffix), name.count > prefix.count + suffix.count else {
            return nil
        }
        let digits = name.dropFirst(prefix.count).dropLast(suffix.count)
        guard digits.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return Int(digits)
    }

    /// Steps with a DONE marker, ascending.
    public func completeSteps() throws -> [Int] {
        try listDirectory(path).compactMap { Self.step(of: $0, prefix: "DONE_", suffix: "") }.sorted()
    }

    // MARK: - Saving

    /// Saves the checkpoint of `state.step`: the model from `parameters` (N fp32, checkpoint order)
    /// in `precision`, then the state, then the DONE marker; then rotates old checkpoints away.
    public func save(state: TrainingState, parameters: UnsafeBufferPointer<Float>,
                     precision: CheckpointFile.Precision) throws {
        let step = state.step
        // Overwriting a step (a rerun): unmark it first, so a kill mid-way cannot leave a marker
        // over a mix of old and new files.
        if fileExists(donePath(step: step)) {
            try removeFile(donePath(step: step))
            try syncDirectory(path)
        }
        let model = modelPath(step: step)
        try CheckpointFile.write(model, config: state.config, parameters: parameters, precision: precision)
        var state = state
        state.modelChecksum = try fileChecksum(model)
        try state.write(statePath(step: step))
        try syncDirectory(path)
        try writeFileAtomically(donePath(step: step), [])
        try syncDirectory(path)
        try rotate(justSaved: step)
    }

    public func save(state: TrainingState, parameters: [Float], precision: CheckpointFile.Precision) throws {
        try parameters.withUnsafeBufferPointer { try save(state: state, parameters: $0, precision: precision) }
    }

    // MARK: - Rotation

    /// The complete steps rotation keeps, given the complete steps on disk.
    public func stepsToKeep(_ complete: [Int]) -> Set<Int> {
        let sorted = complete.sorted()
        var keep = Set(keepLast > 0 ? Array(sorted.suffix(keepLast)) : sorted)
        if keepEvery > 0 { keep.formUnion(sorted.filter { $0 % keepEvery == 0 }) }
        return keep
    }

    /// Deletes complete checkpoints that `stepsToKeep` drops, and leftovers of interrupted saves
    /// (unmarked model_/state_ files and .tmp files of steps before `justSaved`). Does nothing
    /// when keepLast is 0: "keep everything" deletes nothing at all.
    func rotate(justSaved: Int) throws {
        if keepLast == 0 { return }
        let names = try listDirectory(path)
        let complete = names.compactMap { Self.step(of: $0, prefix: "DONE_", suffix: "") }
        var keep = stepsToKeep(complete)
        keep.insert(justSaved)
        let dropped = complete.filter { !keep.contains($0) }
        if !dropped.isEmpty {
            // Markers first, made durable, so a kill during the deletions below leaves only
            // unmarked files, which resume ignores and the next rotation removes.
            for step in dropped { try removeFile(donePath(step: step)) }
            try syncDirectory(path)
        }
        let marked = Set(complete).subtracting(dropped)
        for name in names {
            var step: Int? = nil
            for (prefix, suffix) in [("model_", ".bin"), ("state_", ".bin"), ("model_", ".bin.tmp"),
                                     ("state_", ".bin.tmp"), ("DONE_", ".tmp")] {
                if let s = Self.step(of: name, prefix: prefix, suffix: suffix) { step = s; break }
            }
            if let step, !marked.contains(step), step < justSaved || dropped.contains(step) {
                try removeFile(joinPath(path, name))
            }
        }
    }

    // MARK: - Loading

    /// The newest complete checkpoint, loaded and verified; nil if there is none. Markers whose
    /// files are missing are skipped (noted); a damaged or mismatched one is an error.
    public func latestComplete(config: GPT2Config? = nil) throws -> Checkpoint? {
        var notes: [String] = []
        for step in try completeSteps().reversed() {
            let missing = [modelPath(step: step), statePath(step: step)].filter { !fileExists($0) }
            if !missing.isEmpty {
                notes.append("\(donePath(step: step)): skipped, missing \(missing.joined(separator: " and "))")
                continue
            }
            var checkpoint = try load(step: step, config: config)
            checkpoint.notes = notes
            return checkpoint
        }
        return nil
    }

    /// Loads and verifies the checkpoint of `step` (its DONE marker is not required here).
    public func load(step: Int, config: GPT2Config? = nil) throws -> Checkpoint {
        let model = modelPath(step: step), statePath = statePath(step: step)
        let state = try TrainingState.read(statePath, config: config)
        if state.step != step {
            throw LLMError("\(statePath): records step \(state.step), but its name says \(step)")
        }
        let (modelConfig, _) = try CheckpointFile.readHeader(model)
        if modelConfig != state.config {
            throw LLMError("\(model): model is \(modelConfig), but \(statePath) was written for \(state.config)")
        }
        if state.modelChecksum != 0 {
            let sum = try fileChecksum(model)
            if sum != state.modelChecksum {
                throw LLMError("\(model): checksum does not match the one recorded in \(statePath): the model "
                               + "file is damaged or was replaced; delete \(donePath(step: step)) to resume from "
                               + "the checkpoint before")
            }
        }
        return Checkpoint(step: step, modelPath: model, statePath: statePath, state: state)
    }
}

/// One verified checkpoint: its files, the state, and notes on newer markers that were skipped.
public struct Checkpoint {
    public let step: Int
    public let modelPath: String
    public let statePath: String
    public var state: TrainingState
    public var notes: [String] = []

    /// The model's parameters as fp32 (bf16 files widened); with master weights in the state, those
    /// are the exact values instead.
    public func readParameters() throws -> [Float] {
        if let master = state.masterWeights, state.processCount == 1 { return master }
        return try CheckpointFile.read(modelPath).parameters
    }
}
