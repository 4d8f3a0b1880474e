// Saving a run's whole state beside its model and resuming from it, so the losses after a resume
// are bit-identical to those of a run that was never interrupted.

extension Trainer {
    /// Everything a resumed run needs besides the weights: moments, master weights (when the
    /// model file is bf16 they are what keeps the resume exact), loader position, detectors, RNGs.
    public func trainingState(step: Int, keepMasterWeights: Bool) throws -> TrainingState {
        let (m, v) = try model.readOptimizerState()
        var state = TrainingState(step: step, config: model.config, m: m, v: v,
                                  masterWeights: keepMasterWeights ? try model.readParameters() : nil)
        state.batchSize = options.B
        state.sequenceLength = options.T
        state.randomStates = try model.readRandomState()
        let p = train.position
        state.loaderShardIndex = p.shardPosition
        state.loaderSampleIndex = p.samplePosition
        state.shuffleRandomState = p.rngWords
        state.shardOrder = p.shardOrder
        state.sampleOrder = p.sampleOrder
        state.outlierDetectors = lossDetector.snapshot + normDetector.snapshot
        return state
    }

    /// Saves model + state + DONE marker for `step` in `directory` (with its rotation rules).
    public func saveCheckpoint(step: Int, to directory: CheckpointDirectory,
                               precision: CheckpointFile.Precision) throws {
        let state = try trainingState(step: step, keepMasterWeights: precision == .bf16)
        // A bf16 file holds the weights the device computes with (bf16 values convert exactly);
        // an fp32 file the fp32 parameters.
        let parameters = precision == .bf16 ? try model.readWorkingParameters() : try model.readParameters()
        try directory.save(state: state, parameters: parameters, precision: precision)
    }

    /// Restores parameters, optimizer state, RNGs, the loader position and the outlier windows
    /// from `checkpoint`; the loop then starts at its step.
    public func resume(from checkpoint: Checkpoint) throws {
        let s = checkpoint.state
        let name = checkpoint.statePath
        if s.config != model.config {
            throw LLMError("\(name): saved for \(s.config), but this run's model is \(model.config)")
        }
        if s.batchSize != 0 && (s.batchSize != options.B || s.sequenceLength != options.T) {
            throw LLMError("\(name): saved with batch \(s.batchSize) x \(s.sequenceLength), this run uses \(options.B) x \(options.T); resume with the same shape")
        }
        if s.step > steps {
            throw LLMError("\(name): step \(s.step) is past this run's \(steps) steps")
        }
        if let master = s.masterWeights, s.processCount == 1 {
            try model.writeParameters(working: CheckpointFile.read(checkpoint.modelPath).parameters, master: master)
        } else {
            try model.writeParameters(checkpoint.readParameters())
        }
        try model.writeOptimizerState(m: s.m, v: s.v)
        try model.writeRandomState(s.randomStates)
        try train.restore(DataLoader.Position(
            shardPosition: s.loaderShardIndex, samplePosition: s.loaderSampleIndex, epoch: 0,
            shardOrder: s.shardOrder, sampleOrder: s.sampleOrder, rngWords: s.shuffleRandomState))
        let n = OutlierDetector.snapshotCount
        if s.outlierDetectors.count == 2 * n {
            lossDetector = try OutlierDetector(snapshot: Array(s.outlierDetectors[..<n]), source: name)
            normDetector = try OutlierDetector(snapshot: Array(s.outlierDetectors[n...]), source: name)
        }
        startStep = s.step
    }
}
