// The metric catalog (common/metric_catalog.h) against everything that
// names metrics apart from the processes that write them (those are checked
// by every end-to-end test's teardown): the selection metrics, the store's
// views and docs/results-database.md.
#include "common/metric_catalog.h"

#include <gtest/gtest.h>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "common/selection_metrics.h"
#include "server/store/schema.h"

namespace megabatch {
namespace {

TEST(MetricCatalogTest, NamesAreUniqueAndTargetsAreTheSelectionMetrics) {
  std::set<std::string_view> names;
  for (const MetricInfo& m : kMetricCatalog) {
    EXPECT_TRUE(names.insert(m.name).second) << m.name;
    EXPECT_FALSE(m.meaning.empty()) << m.name;
    const SelectionMetric* s = FindSelectionMetric(m.name);
    EXPECT_EQ(m.target, s != nullptr) << m.name;
    if (s != nullptr) {
      EXPECT_EQ(m.better,
                s->higher_is_better ? Better::kHigher : Better::kLower)
          << m.name;
    }
  }
  for (const SelectionMetric& s : kSelectionMetrics) {
    EXPECT_NE(FindMetricInfo(s.name), nullptr) << s.name;
  }
  EXPECT_EQ(FindMetricInfo("weight_norm/fc1.weight")->name, "weight_norm/");
  EXPECT_EQ(FindMetricInfo("weight_norm/"), nullptr);
  EXPECT_EQ(FindMetricInfo("val_acc"), nullptr);
}

TEST(MetricCatalogTest, EveryMetricTheStoresViewsReadIsInTheCatalog) {
  // "m.name = 'x'" and "name IN ('x', 'y')" in the schema's SQL.
  const std::regex equals(R"(name\s*=\s*'([^']+)')");
  const std::regex in(R"(name\s+(?:NOT\s+)?IN\s*\(([^)]*)\))");
  const std::regex quoted(R"('([^']+)')");
  int found = 0;
  for (const char* sql : store::kMigrations) {
    const std::string text(sql);
    std::vector<std::string> names;
    for (std::sregex_iterator it(text.begin(), text.end(), equals), end;
         it != end; ++it) {
      names.push_back((*it)[1]);
    }
    for (std::sregex_iterator it(text.begin(), text.end(), in), end; it != end;
         ++it) {
      const std::string list = (*it)[1];
      for (std::sregex_iterator q(list.begin(), list.end(), quoted); q != end;
           ++q) {
        names.push_back((*q)[1]);
      }
    }
    for (const std::string& name : names) {
      // Table names (sqlite_master lookups) are not metrics.
      if (text.find("sqlite_master") != std::string::npos) continue;
      EXPECT_NE(FindMetricInfo(name), nullptr)
          << "a view reads '" << name << "', which the catalog lacks";
      ++found;
    }
  }
  EXPECT_GT(found, 10);
}

TEST(MetricCatalogTest, TheResultsDatabaseDocListsEveryMetric) {
  std::ifstream in(MEGABATCH_RESULTS_DOC);
  std::stringstream text;
  text << in.rdbuf();
  const std::string doc = text.str();
  const size_t start = doc.find("| metric | unit | better |");
  ASSERT_NE(start, std::string::npos);
  std::set<std::string> listed;
  std::istringstream lines(doc.substr(start));
  for (std::string line;
       std::getline(lines, line) && line.rfind("|", 0) == 0;) {
    if (line.rfind("| `", 0) != 0) continue;
    const size_t end = line.find('`', 3);
    std::string name = line.substr(3, end - 3);
    if (name.size() > 4 && name.substr(name.size() - 4) == "NAME") {
      name.resize(name.size() - 4);  // a family: "weight_norm/NAME"
    }
    listed.insert(name);
  }
  for (const MetricInfo& m : kMetricCatalog) {
    EXPECT_EQ(listed.count(std::string(m.name)), 1u)
        << "docs/results-database.md does not list " << m.name;
    listed.erase(std::string(m.name));
  }
  for (const std::string& name : listed) {
    ADD_FAILURE() << "docs/results-database.md lists " << name
                  << ", which the catalog lacks";
  }
}

}  // namespace
}  // namespace megabatch
