// hxforge: one binary, subcommands like git. ../shared/spec/cli.md is the contract.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <new>
#include <sstream>
#include <string>
#include <vector>

#include "formats/errors.h"
#include "tools/cli.h"

namespace hx::cli {
namespace {

// libgomp lets an idle thread spin for up to 300,000 rounds (milliseconds) after every parallel region unless told
// otherwise, and it reads that setting once, when it loads — before main. On a machine whose cores are shared (CI,
// these 2-core hosts) the spinning thread takes the core from the work that follows (the converter's hashing thread,
// another process). Measured, alternating runs of `convert` on a cached Gemma-4 E2B teacher: 18.0 / 19.9 s with
// GOMP_SPINCOUNT=10000 against 20.3 / 25.5 s with libgomp's default and 21.2 / 31.6 s with OMP_WAIT_POLICY=active;
// `run` prefill/decode of a 1.1 B model were unchanged (1.74–1.80 s / 1.54–1.62 s for 256 / 16 tokens). So when
// the user set neither variable, the process re-executes itself once with a short spin; a user's setting wins.
void prefer_short_openmp_spin(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") || std::getenv("GOMP_SPINCOUNT")) return;
  if (::setenv("GOMP_SPINCOUNT", "10000", 1) != 0) return;
  ::execv("/proc/self/exe", argv);  // returns only on failure: go on with the default spin
}

const Subcommand* const kSubcommands[] = {&kInspect, &kRepack,   &kSynth,  &kRun,
                                          &kConvert, &kQuantize, &kVerify, &kBatch};

void print_overview() {
  std::printf("hxforge %s: convert Transformer checkpoints to hybrid RWKV-7, quantize, verify\n\n", HXFORGE_VERSION);
  std::printf("usage: hxforge <command> [options]   (hxforge <command> --help for details)\n\ncommands:\n");
  for (const auto* s : kSubcommands) std::printf("  %-10s %s\n", s->name, s->summary);
  std::printf("\nexit status: 0 ok, 1 verification failed, 2 usage, 3 invalid or unsupported input, 4 I/O error\n");
}

po::options_description options_of(const Subcommand& s, po::positional_options_description& positional) {
  po::options_description options(std::string("options of ") + s.name);
  options.add_options()("help,h", "show this help")("quiet,q", "no progress output");
  s.declare(options, positional);
  return options;
}

void print_help(const Subcommand& s) {
  po::positional_options_description positional;
  const auto options = options_of(s, positional);
  std::ostringstream text;
  text << "usage: hxforge " << s.usage << "\n\n" << s.summary << "\n\n" << options << "\nexample:\n  " << s.example
       << "\n";
  std::cout << text.str();
}

int run_subcommand(const Subcommand& s, const std::vector<std::string>& argv) {
  po::positional_options_description positional;
  const auto options = options_of(s, positional);
  po::variables_map args;
  po::store(po::command_line_parser(argv).options(options).positional(positional).run(), args);
  if (args.count("help")) {
    print_help(s);
    return 0;
  }
  po::notify(args);
  return s.run(args);
}

}  // namespace

bool quiet(const po::variables_map& args) { return args.count("quiet") > 0; }

const Subcommand* find_subcommand(const std::string& name) {
  for (const auto* s : kSubcommands)
    if (name == s->name) return s;
  return nullptr;
}

}  // namespace hx::cli

int main(int argc, char** argv) {
  using namespace hx::cli;
  prefer_short_openmp_spin(argv);
  if (argc < 2) {
    print_overview();
    return static_cast<int>(hx::ExitCode::kUsage);
  }
  const std::string name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    print_overview();
    return 0;
  }
  if (name == "--version") {
    std::printf("hxforge %s\n", HXFORGE_VERSION);
    return 0;
  }
  const Subcommand* command = nullptr;
  for (const auto* s : kSubcommands)
    if (name == s->name) command = s;
  if (!command) {
    std::fprintf(stderr, "hxforge: unknown command '%s' (hxforge --help lists them)\n", name.c_str());
    return static_cast<int>(hx::ExitCode::kUsage);
  }
  try {
    return run_subcommand(*command, std::vector<std::string>(argv + 2, argv + argc));
  } catch (const po::error& e) {
    std::fprintf(stderr, "hxforge %s: %s (hxforge %s --help)\n", command->name, e.what(), command->name);
    return static_cast<int>(hx::ExitCode::kUsage);
  } catch (const hx::Error& e) {
    std::fprintf(stderr, "hxforge %s: error: %s\n", command->name, e.what());
    return static_cast<int>(e.code());
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "hxforge %s: error: out of memory\n", command->name);
    return static_cast<int>(hx::ExitCode::kIo);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hxforge %s: internal error: %s\n", command->name, e.what());
    return static_cast<int>(hx::ExitCode::kIo);
  }
}
