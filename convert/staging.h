// The output folder of a conversion, built under a hidden sibling name and renamed into place only when complete.
//
// Design goals: cli.md's atomicity for a whole folder (weights, config.json, manifest.json): a failed or killed
// conversion leaves nothing under the requested name, and an existing output is replaced only with --force, in one
// rename (the old folder moves aside first and is removed after). Non-goals: atomicity across file systems.
#pragma once

#include <string>

namespace hx {

class StagingDir {
 public:
  // Refuses an existing `final_path` unless `overwrite` (UsageError), so a doomed run stops before any work.
  StagingDir(std::string final_path, bool overwrite);
  ~StagingDir();  // removes the staging folder unless committed
  StagingDir(const StagingDir&) = delete;
  StagingDir& operator=(const StagingDir&) = delete;

  // The staging folder (not created: writers that build a folder themselves may create it).
  const std::string& path() const { return staging_; }
  const std::string& final_path() const { return final_; }
  // Moves the staging folder to the final name (replacing an existing output when overwrite) and fsyncs the parent.
  void commit();

 private:
  std::string final_, staging_;
  bool overwrite_, committed_ = false;
};

}  // namespace hx
