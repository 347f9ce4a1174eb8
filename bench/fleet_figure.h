// ingest_bench's fourth figure: a fleet of simulated workers against a
// coordinator process of its own (see fleet_figure.cc).
#ifndef MEGABATCH_BENCH_FLEET_FIGURE_H_
#define MEGABATCH_BENCH_FLEET_FIGURE_H_

#include <string>

namespace megabatch::bench {

struct FleetOptions {
  std::string coordinator_bin;
  std::string dir;     // scratch: the database and the coordinator's log
  int workers = 1000;  // simulated workers, one connection each
  int seconds = 60;    // the measured window
  // The sweep: more trials than the window can use, so that no worker
  // waits for work.
  std::string spec;
  // Each simulated worker reports `points_per_report` points once a second
  // while it "trains" a trial for 5 to 15 s, heartbeats every second and
  // long-polls for the next trial.
  int points_per_report = 40;
  // A WatchSweep client on the sweep throughout, as a dashboard would be.
  bool watch = true;
};

// Runs the fleet and prints its figures; false if something failed that
// a real worker could not have retried.
bool RunFleet(const FleetOptions& options);

}  // namespace megabatch::bench

#endif  // MEGABATCH_BENCH_FLEET_FIGURE_H_
