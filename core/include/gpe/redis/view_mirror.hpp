// The instance layout's mirror (layout.hpp, namespace node): each pass
// merges the directory as prometheus_client merges one instance's files
// (counters, histograms, summaries and sum gauges added up over its
// processes and its archive; min/max/mostrecent gauges reduced; all/liveall
// gauges kept per process) and sends the values of that merge that changed,
// as SETRANGE of their slots, with the series that came or went, in one
// server-side script (a large pass, such as the first, in scripts of 500
// fields: a reader may see such a pass half done); a scrape of the fleet
// reads one string of values per instance.
//
// The node's id is kept in the directory ({directory}/.gpe-node): another
// process taking the mirror over, or a restarted agent, continues the same
// node. If the node was retired meanwhile (taken for dead and folded into the
// fleet archive: a stall longer than the TTL), the mirror goes on as a new
// node that publishes only what was counted since, so that nothing is
// counted twice.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "gpe/redis/mirror.hpp"

namespace gpe::redis {

class ViewMirror final : public Publisher {
  public:
    ViewMirror(std::shared_ptr<Client> client, MirrorOptions options);
    ~ViewMirror() override;
    ViewMirror(const ViewMirror&) = delete;
    ViewMirror& operator=(const ViewMirror&) = delete;

    PassReport pass(Diagnostics& diagnostics) override;
    void retire(Diagnostics& diagnostics) override;
    const MirrorOptions& options() const override { return options_; }
    // The node this mirror publishes as (empty before the first pass).
    const std::string& node() const;

  private:
    struct State;
    struct Batch;
    struct Chunk;
    void load_node();
    // The view's fields and slots as Redis has them (a resend starts there).
    void learn_slots();
    void merge_directory(Batch& batch, Diagnostics& diagnostics);
    // What changed, as write scripts of at most kFieldsPerScript fields.
    void build(Batch& batch);
    Command write_command(const Batch& batch, size_t set_at, size_t removed_at, const Chunk& chunk,
                          const std::string& expected) const;
    enum class Written { kAll, kRetired, kLost };
    // The scripts' answers: what got through is in `sent`.
    Written apply(Batch& batch, const std::vector<Reply>& replies);
    // The node was retired: go on as a new one, with what was sent as the base.
    void start_new_node(Diagnostics& diagnostics);

    std::shared_ptr<Client> client_;
    MirrorOptions options_;
    std::unique_ptr<State> state_;
};

}  // namespace gpe::redis
