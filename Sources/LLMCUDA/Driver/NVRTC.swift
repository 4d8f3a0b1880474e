// NVRTC (libnvrtc.so) through dlopen: compiles CUDA C to a cubin for one GPU architecture.
// Runs without a GPU, so CI can compile every kernel.

#if canImport(Glibc)
import Glibc
#endif
import LLM

typealias NvrtcProgram = OpaquePointer
typealias FnNvrtcVersion = @convention(c) (UnsafeMutablePointer<Int32>, UnsafeMutablePointer<Int32>) -> Int32
typealias FnNvrtcCreate = @convention(c) (UnsafeMutablePointer<NvrtcProgram?>, UnsafePointer<CChar>,
                                          UnsafePointer<CChar>?, Int32,
                                          UnsafePointer<UnsafePointer<CChar>?>?,
                                          UnsafePointer<UnsafePointer<CChar>?>?) -> Int32
typealias FnNvrtcCompile = @convention(c) (NvrtcProgram?, Int32, UnsafePointer<UnsafePointer<CChar>?>?) -> Int32
typealias FnNvrtcSize = @convention(c) (NvrtcProgram?, UnsafeMutablePointer<Int>) -> Int32
typealias FnNvrtcBytes = @convention(c) (NvrtcProgram?, UnsafeMutablePointer<CChar>) -> Int32
typealias FnNvrtcDestroy = @convention(c) (UnsafeMutablePointer<NvrtcProgram?>) -> Int32
typealias FnNvrtcErrorString = @convention(c) (Int32) -> UnsafePointer<CChar>?

/// Result of one compilation: the cubin and NVRTC's log (warnings included).
public struct CompiledKernel {
    public let cubin: [UInt8]
    public let log: String
}

public final class NVRTC {
    public let library: DynamicLibrary
    public let version: (major: Int, minor: Int)
    let nvrtcCreateProgram: FnNvrtcCreate
    let nvrtcCompileProgram: FnNvrtcCompile
    let nvrtcGetProgramLogSize: FnNvrtcSize
    let nvrtcGetProgramLog: FnNvrtcBytes
    let nvrtcGetCUBINSize: FnNvrtcSize
    let nvrtcGetCUBIN: FnNvrtcBytes
    let nvrtcDestroyProgram: FnNvrtcDestroy
    let nvrtcGetErrorString: FnNvrtcErrorString

    init(library l: DynamicLibrary) throws {
        library = l
        let nvrtcVersion: FnNvrtcVersion = try l.symbol("nvrtcVersion")
        nvrtcCreateProgram = try l.symbol("nvrtcCreateProgram")
        nvrtcCompileProgram = try l.symbol("nvrtcCompileProgram")
        nvrtcGetProgramLogSize = try l.symbol("nvrtcGetProgramLogSize")
        nvrtcGetProgramLog = try l.symbol("nvrtcGetProgramLog")
        nvrtcGetCUBINSize = try l.symbol("nvrtcGetCUBINSize")
        nvrtcGetCUBIN = try l.symbol("nvrtcGetCUBIN")
        nvrtcDestroyProgram = try l.symbol("nvrtcDestroyProgram")
        nvrtcGetErrorString = try l.symbol("nvrtcGetErrorString")
        var major: Int32 = 0, minor: Int32 = 0
        _ = nvrtcVersion(&major, &minor)
        version = (Int(major), Int(minor))
    }

    public static let shared: Result<NVRTC, LLMError> = {
        do {
            let lib = try DynamicLibrary.open(names: ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"],
                                              stem: "libnvrtc.so.", what: "nvrtc")
            return .success(try NVRTC(library: lib))
        } catch let e as LLMError {
            return .failure(e)
        } catch {
            return .failure(LLMError("nvrtc: \(error)"))
        }
    }()

    public static func get() throws -> NVRTC { try shared.get() }

    func check(_ r: Int32, _ call: String, _ name: String) throws {
        if r != 0 {
            let text = nvrtcGetErrorString(r).map { String(cString: $0) } ?? "error \(r)"
            throw LLMError("nvrtc: \(call) of \(name) failed: \(text)")
        }
    }

    /// Compiles `source` (named `name` in messages) with `headers` available to #include.
    /// A compile error throws with NVRTC's log; warnings come back in the log.
    public func compile(name: String, source: String, headers: [(name: String, source: String)],
                        options: [String]) throws -> CompiledKernel {
        var prog: NvrtcProgram? = nil
        let cStrings = ([source, name] + headers.map(\.source) + headers.map(\.name) + options)
            .map { strdup($0)! }
        defer { cStrings.forEach { Glibc.free($0) } }
        let h = headers.count
        let headerSources = (0 ..< h).map { UnsafePointer(cStrings[2 + $0]) as UnsafePointer<CChar>? }
        let headerNames = (0 ..< h).map { UnsafePointer(cStrings[2 + h + $0]) as UnsafePointer<CChar>? }
        let opts = options.indices.map { UnsafePointer(cStrings[2 + 2 * h + $0]) as UnsafePointer<CChar>? }
        try check(nvrtcCreateProgram(&prog, cStrings[0], cStrings[1], Int32(h), headerSources, headerNames),
                  "nvrtcCreateProgram", name)
        defer { _ = nvrtcDestroyProgram(&prog) }
        let result = nvrtcCompileProgram(prog, Int32(opts.count), opts)
        var logSize = 0
        try check(nvrtcGetProgramLogSize(prog, &logSize), "nvrtcGetProgramLogSize", name)
        var logBytes = [CChar](repeating: 0, count: max(logSize, 1) + 1)
        try check(nvrtcGetProgramLog(prog, &logBytes), "nvrtcGetProgramLog", name)
        let log = String(cString: logBytes).trimmingTrailingWhitespace()
        if result != 0 {
            let text = nvrtcGetErrorString(result).map { String(cString: $0) } ?? "error \(result)"
            throw LLMError("nvrtc: compiling \(name) (\(options.joined(separator: " "))) failed: \(text)\n\(log)")
        }
        var size = 0
        try check(nvrtcGetCUBINSize(prog, &size), "nvrtcGetCUBINSize", name)
        var cubin = [CChar](repeating: 0, count: size)
        try check(nvrtcGetCUBIN(prog, &cubin), "nvrtcGetCUBIN", name)
        return CompiledKernel(cubin: cubin.map { UInt8(bitPattern: $0) }, log: log)
    }
}

extension String {
    func trimmingTrailingWhitespace() -> String {
        var s = Substring(self)
        while let last = s.last, last == " " || last == "\n" || last == "\r" || last == "\t" || last == "\0" {
            s = s.dropLast()
        }
        return String(s)
    }
}
