// hxforge: one binary, subcommands like git. ../shared/spec/cli.md is the contract.
#include <cstdio>
#include <iostream>
#include <new>
#include <sstream>
#include <string>
#include <vector>

#include "formats/errors.h"
#include "tools/cli.h"

namespace hx::cli {
namespace {

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
