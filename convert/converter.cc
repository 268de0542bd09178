#include "convert/converter.h"


#include <chrono>
#include <filesystem>
#include <memory>

#include "convert/manifest.h"
#include "convert/staging.h"
#include "formats/errors.h"
#include "formats/float_convert.h"
#include "formats/mapped_file.h"
#include "formats/parallel.h"
#include "formats/sha256.h"
#include "formats/pth.h"
#include "formats/safetensors.h"

namespace hx {
namespace {

// 4 MiB per chunk: big writes, a few MiB of scratch, a multiple of every element size.
constexpr size_t kChunkBytes = size_t{4} << 20;
constexpr uint64_t kBlock = uint64_t{1} << 16;  // elements per conversion block (a parallel task, or L2-sized)

// Streams one planned tensor's bytes to `emit`, chunk by chunk.
void stream_tensor(const PlannedTensor& t, const std::function<void(std::span<const std::byte>)>& emit) {
  const uint32_t out_size = dtype_element_size(t.dtype);
  if (t.provenance == Provenance::kCopy) {  // read, not mapped: see for_each_stored_chunk
    for_each_stored_chunk(t.source->view, kChunkBytes, emit);
    return;
  }
  std::vector<float> values;
  std::vector<std::byte> out;
  auto convert_and_emit = [&](uint64_t count) {
    out.resize(count * out_size);
    parallel_for(0, static_cast<int64_t>((count + kBlock - 1) / kBlock), 2, [&](int64_t b) {
      const uint64_t lo = static_cast<uint64_t>(b) * kBlock, n = std::min(kBlock, count - lo);
      convert_from_f32(t.dtype, values.data() + lo, out.data() + lo * out_size, n);
    });
    emit(out);
  };
  if (t.provenance == Provenance::kInit) {
    const TensorInit init(t.init, t.context, t.shape, t.stream_key);
    uint64_t numel = 0;
    checked_numel(t.shape, &numel);
    const uint64_t per_chunk = kChunkBytes / sizeof(float);
    for (uint64_t begin = 0; begin < numel; begin += per_chunk) {
      const uint64_t count = std::min(per_chunk, numel - begin);
      values.resize(count);
      parallel_for(0, static_cast<int64_t>((count + kBlock - 1) / kBlock), 2, [&](int64_t b) {
        const uint64_t lo = static_cast<uint64_t>(b) * kBlock, n = std::min(kBlock, count - lo);
        init.fill(begin + lo, n, values.data() + lo);
      });
      convert_and_emit(count);
    }
    return;
  }
  // kScale / kCast: y = round_to_dtype(f32(x) · f32(scale)), as torch computes `bf16_tensor * 0.3`. On the calling
  // thread, block by block through an L2-sized f32 buffer: it runs at memory speed, while the other core hashes
  // (Sha256Beside) — a team here only made the idle thread spin between chunks.
  const DType in_type = t.source->view.dtype;
  const uint32_t in_size = dtype_element_size(in_type);
  const float scale = static_cast<float>(t.scale);
  values.resize(kBlock);
  for_each_stored_chunk(t.source->view, kChunkBytes, [&](std::span<const std::byte> chunk) {
    if (chunk.size() % in_size != 0) throw FormatError("tensor '" + t.source->name + "': chunk splits an element");
    const uint64_t count = chunk.size() / in_size;
    out.resize(count * out_size);
    for (uint64_t lo = 0; lo < count; lo += kBlock) {
      const uint64_t n = std::min(kBlock, count - lo);
      convert_to_f32(in_type, chunk.data() + lo * in_size, values.data(), n);
      if (scale != 1.0f)
        for (uint64_t i = 0; i < n; ++i) values[i] *= scale;
      convert_from_f32(t.dtype, values.data(), out.data() + lo * out_size, n);
    }
    emit(out);
  });
}

void write_text_file(const std::string& path, const std::string& text) {
  AtomicOutputFile f(path, /*overwrite=*/true);
  f.write(std::as_bytes(std::span<const char>(text.data(), text.size())));
  f.commit();
}

}  // namespace

Layout resolve_layout(const std::string& layout, Arch to) {
  std::string name = layout.empty() ? default_layout_name(to) : layout;
  if (name == "tiny") name = "tiny-" + std::string(arch_name(to));
  Layout l = load_layout(name);
  if (l.student_arch != to)
    throw UsageError("layout '" + l.name + "' makes " + std::string(arch_name(l.student_arch)) +
                     " students; --to asks for " + std::string(arch_name(to)));
  return l;
}

nlohmann::json ConvertResult::to_json() const {
  nlohmann::json dropped_json = nlohmann::json::array();
  for (const DroppedTensor& d : dropped) dropped_json.push_back({{"name", d.name}, {"reason", d.reason}});
  nlohmann::json j = {{"out", out},
                      {"committed", committed},
                      {"layout", layout},
                      {"architecture", arch_name(student_arch)},
                      {"format", format == StudentFormat::kPth ? "pth" : "safetensors"},
                      {"dtype", dtype_name(dtype)},
                      {"tensors", tensors},
                      {"copied", by_provenance[static_cast<int>(Provenance::kCopy)]},
                      {"cast", by_provenance[static_cast<int>(Provenance::kCast)]},
                      {"scaled", by_provenance[static_cast<int>(Provenance::kScale)]},
                      {"initialised", by_provenance[static_cast<int>(Provenance::kInit)]},
                      {"bytes", bytes},
                      {"teacher_tensors_dropped", dropped_json},
                      {"seconds", seconds}};
  j["verification"] = verification ? verification->to_json() : nlohmann::json{{"status", "skipped"}};
  j["passed"] = !verification || verification->passed();
  return j;
}

ConvertResult convert_checkpoint(const ConvertOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  // Everything that can be wrong with the input is found before anything is written.
  StagingDir staging(options.out, options.overwrite);
  const Layout layout = resolve_layout(options.layout, options.to);
  const Checkpoint teacher = open_checkpoint(options.teacher);
  const ModelConfig teacher_cfg = config_for_checkpoint(teacher);
  const ConversionPlan plan = plan_conversion(teacher, teacher_cfg, layout, options.plan);

  std::vector<TensorSpec> specs;
  for (const PlannedTensor& t : plan.tensors) specs.push_back({t.name, t.dtype, t.shape});
  std::vector<Digest> hashes(plan.tensors.size());
  uint64_t bytes_done = 0;
  const TensorSource source = [&](size_t index, const ByteSink& sink) {
    Sha256Beside hash;  // hashes each chunk while the writer writes it
    stream_tensor(plan.tensors[index], [&](std::span<const std::byte> chunk) {
      hash.start(chunk);
      try {
        sink(chunk);
      } catch (...) {
        hash.drain();  // the chunk's buffer dies while this unwinds
        throw;
      }
      hash.wait();
      bytes_done += chunk.size();
      if (options.on_progress) options.on_progress(index, bytes_done);
    });
    hashes[index] = hash.finish();
    if (options.on_progress) options.on_progress(index + 1, bytes_done);
  };

  std::string weights;
  if (plan.format == StudentFormat::kPth) {
    std::filesystem::create_directories(staging.path());
    weights = staging.path() + "/model.pth";
    write_pth(weights, specs, source, {});
  } else {
    SafetensorsWriteOptions st;
    st.metadata = {{"format", "pt"}};
    st.max_shard_bytes = options.max_shard_bytes;
    write_safetensors(staging.path(), specs, source, st);
    weights = staging.path();
  }
  write_text_file(staging.path() + "/config.json", to_config_json(plan.student).dump(2) + "\n");

  ConvertResult result;
  result.out = staging.final_path();
  result.layout = layout.name;
  result.student_arch = plan.student.arch;
  result.format = plan.format;
  result.dtype = plan.student.dtype;
  result.tensors = plan.tensors.size();
  for (const PlannedTensor& t : plan.tensors) ++result.by_provenance[static_cast<int>(t.provenance)];
  result.bytes = bytes_done;
  result.dropped = plan.dropped;

  const Checkpoint student = open_student(staging.path(), plan.format);
  Probe probe;
  bool probed = false;
  if (options.verify) {
    result.verification = verify_student(student, teacher, plan, hashes, &probe);
    probed = !probe.top.empty();
  }
  const auto student_files = file_of_tensors(student);
  ManifestInputs in;
  in.plan = &plan;
  in.teacher = &teacher;
  in.hashes = &hashes;
  in.student_files = &student_files;
  in.verification = result.verification ? &*result.verification : nullptr;
  in.probe = probed ? &probe : nullptr;
  in.tool_version = options.tool_version;
  write_text_file(staging.path() + "/manifest.json", build_manifest(in).dump(2) + "\n");

  if (!result.verification || result.verification->passed()) {
    staging.commit();
    result.committed = true;
  }
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace hx
