// `llm kernels`: lists the embedded CUDA kernel files, or compiles all of them with NVRTC for the
// given architectures and both precisions (CI runs this without a GPU), failing on any warning;
// --dump keeps the cubins so registers, spills and SASS can be read with cuobjdump.

import ArgumentParser
import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import LLM
import LLMCUDA

struct KernelsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "kernels",
        abstract: "List the embedded CUDA kernels, or compile them all with NVRTC (no GPU needed).")

    @Flag(name: .long, help: "Compile every kernel file for each --arch and both precisions.")
    var compile = false

    @Option(name: .long, help: "Comma-separated GPU architectures for --compile.")
    var arch = "sm_80,sm_90a"

    @Flag(name: .long, help: "Accept NVRTC warnings instead of failing on them.")
    var allowWarnings = false

    @Option(name: .long, help: "With --compile: write each cubin as DIR/<module>-<arch>-<precision>.cubin (for cuobjdump).")
    var dump: String?

    func run() throws {
        let modules = KernelSources.modules
        if !compile {
            for m in modules + KernelSources.headers { print("\(m.name)\t\(m.source.utf8.count) bytes") }
            return
        }
        let nvrtc = try NVRTC.get()
        print("nvrtc \(nvrtc.version.major).\(nvrtc.version.minor) from \(nvrtc.library.path)")
        let archs = arch.split(separator: ",").map { String($0).trimmingCharacters(" ") }
        if archs.isEmpty || archs.contains(where: { !$0.hasPrefix("sm_") && !$0.hasPrefix("compute_") }) {
            throw LLMError("--arch \(arch): expected a list like sm_80,sm_90a")
        }
        if let dir = dump {
            mkdir(dir, 0o755)  // an existing directory is fine; a missing parent fails at the first write
        }
        var failures = 0
        for a in archs {
            for precision in GPUPrecision.allCases {
                for m in modules {
                    let start = DispatchTime.now().uptimeNanoseconds
                    do {
                        let out = try KernelSources.compile(module: m.name, source: m.source, arch: a, precision: precision)
                        let ms = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
                        let warned = !out.log.isEmpty
                        print("\(warned ? "WARN" : "ok  ") \(a) \(precision.rawValue) \(m.name): \(out.cubin.count) bytes, "
                              + "\(Int(ms)) ms")
                        if warned {
                            print(out.log)
                            if !allowWarnings { failures += 1 }
                        }
                        if let dir = dump {
                            let base = m.name.split(separator: ".").first.map(String.init) ?? m.name
                            try writeFileAtomically("\(dir)/\(base)-\(a)-\(precision.rawValue).cubin", out.cubin)
                        }
                    } catch {
                        print("FAIL \(a) \(precision.rawValue) \(m.name): \(error)")
                        failures += 1
                    }
                }
            }
        }
        if failures > 0 { throw LLMError("kernels: \(failures) compile(s) failed or warned") }
        print("all \(modules.count * archs.count * 2) kernel compiles clean")
    }
}

extension String {
    func trimmingCharacters(_ c: Character) -> String {
        String(drop { $0 == c }.reversed().drop { $0 == c }.reversed())
    }
}
