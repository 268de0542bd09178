// The subcommand registry of the hxforge CLI (../shared/spec/cli.md is the contract).
//
// Each subcommand lives in its own file and declares its options exactly once, through Boost.ProgramOptions;
// main.cc builds --help (with the subcommand's example) from the same declarations, parses, runs, and maps
// exceptions to exit codes (2 usage, 3 invalid input, 4 I/O; 1 is returned by verify when a threshold fails).
#pragma once

#include <boost/program_options.hpp>
#include <string>

namespace hx::cli {

namespace po = boost::program_options;

struct Subcommand {
  const char* name;
  const char* usage;    // "inspect PATH [--json] [--hash] [--check]"
  const char* summary;  // one line
  const char* example;  // a command line that works
  void (*declare)(po::options_description& options, po::positional_options_description& positional);
  int (*run)(const po::variables_map& args);
};

extern const Subcommand kInspect;
extern const Subcommand kRepack;
extern const Subcommand kSynth;
extern const Subcommand kRun;
extern const Subcommand kConvert;
extern const Subcommand kQuantize;
extern const Subcommand kBatch;
extern const Subcommand kVerify;

// The registered subcommand of that name, or nullptr (batch runs jobs through it).
const Subcommand* find_subcommand(const std::string& name);

// Common options every subcommand gets: --help, --quiet.
bool quiet(const po::variables_map& args);

}  // namespace hx::cli
