// The losses of a training step's micro-steps on the way from the GPU to the host: each
// trainingForward queues a copy of its per-row losses into a page-locked slot and goes on; the
// host sums a slot only once its copy is done, so no micro-step waits for the GPU.

import LLM

// MARK: - Mean of the per-row losses

/// The mean of `losses` as the loss of a forward: summed in Double in row order, then rounded once.
/// Plain forward and trainingForward both use it, so their losses are the same floats.
func meanLoss(_ losses: UnsafeBufferPointer<Float>) -> Float {
    var sum = 0.0
    for x in losses { sum += Double(x) }
    return Float(sum / Double(losses.count))
}

// MARK: - Slots

/// Page-locked slots of per-row losses, one per micro-step whose losses have not been summed yet,
/// and the means of those already summed since `reset()` (zeroGradients). A slot is written only
/// by the copy engine (a download queued by `queue`) and read by the host only after waiting for
/// that copy (`PinnedHostBuffer.waitForCopies`), so the two never touch it at the same time.
final class MicroStepLosses {
    let device: CUDADevice
    /// Rows of each slot: the planned B*T.
    let rowsPerSlot: Int
    var slots: [PinnedHostBuffer<Float>] = []
    /// Slots whose losses are summed or dropped: free for the next micro-step.
    var freeSlots: [Int] = []
    /// Micro-steps whose copies were queued but whose losses are not summed yet, oldest first.
    var pending: [(slot: Int, rows: Int)] = []
    /// Means of the summed micro-steps since `reset()`, in order.
    var means: [Float] = []
    /// The slot of the last micro-step queued: `lastRows()` reads it. Its losses stay there until
    /// a later micro-step takes the slot, and that one is then the last.
    var last: (slot: Int, rows: Int)?

    init(device: CUDADevice, rowsPerSlot: Int) {
        self.device = device
        self.rowsPerSlot = rowsPerSlot
    }

    /// Queues the copy of `rows` per-row losses (fp32 on the device, after the work queued so far)
    /// into a free slot, without waiting. Slots are made as needed, up to `microSteps` of them
    /// (the first step makes them; later steps reuse them); a caller that runs more micro-steps
    /// than that between resets waits for the oldest one's losses instead of pinning more memory.
    func queue(_ losses: CUdeviceptr, rows: Int, microSteps: Int) throws {
        precondition(rows <= rowsPerSlot, "micro-step losses: \(rows) rows, slots hold \(rowsPerSlot)")
        if freeSlots.isEmpty {
            if slots.count < max(microSteps, 1) {
                slots.append(try PinnedHostBuffer(device: device, count: rowsPerSlot,
                                                  what: "training losses (slot \(slots.count))"))
                freeSlots.append(slots.count - 1)
            } else {
                try sumOldest()
            }
        }
        let slot = freeSlots.removeLast()
        try slots[slot].download(from: losses, count: rows)
        pending.append((slot, rows))
        last = (slot, rows)
    }

    /// Waits for the oldest pending micro-step's copy, appends its mean and frees its slot.
    func sumOldest() throws {
        let (slot, rows) = pending.removeFirst()
        try slots[slot].waitForCopies()
        means.append(meanLoss(UnsafeBufferPointer(start: slots[slot].pointer, count: rows)))
        freeSlots.append(slot)
    }

    /// Sums every pending micro-step, oldest first: each waits only for its own copy, so called
    /// while the GPU still runs later micro-steps, the host sums the early ones in the meantime.
    func sumAll() throws {
        while !pending.isEmpty { try sumOldest() }
    }

    /// The means of the micro-steps since `reset()`, in order (waits for their copies).
    func meansSinceReset() throws -> [Float] {
        try sumAll()
        return means
    }

    /// Forgets the micro-steps so far (zeroGradients: a new optimizer step). A pending copy may still
    /// write its slot; the host reads a slot only after waiting for the latest copy into it, which
    /// the stream runs after the older one, so handing the slot out again is safe.
    func reset() {
        for p in pending { freeSlots.append(p.slot) }
        pending.removeAll(keepingCapacity: true)
        means.removeAll(keepingCapacity: true)
    }

    /// The per-row losses of the last micro-step queued (waits for its copy); nil if none was.
    func lastRows() throws -> [Float]? {
        guard let last else { return nil }
        try slots[last.slot].waitForCopies()
        return Array(UnsafeBufferPointer(start: slots[last.slot].pointer, count: last.rows))
    }
}
