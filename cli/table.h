// Table: rows of named values, printed as an aligned table, CSV, JSON or
// Markdown, so that every command offers the same formats from one
// description.
#ifndef MEGABATCH_CLI_TABLE_H_
#define MEGABATCH_CLI_TABLE_H_

#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

namespace megabatch::cli {

enum class OutputFormat { kTable, kJson, kCsv, kMarkdown };

// Thread-compatible.
class Table {
 public:
  explicit Table(std::vector<std::string> columns)
      : columns_(std::move(columns)) {}

  // Values are strings, numbers or null, in column order.
  void AddRow(std::vector<nlohmann::json> row) {
    rows_.push_back(std::move(row));
  }

  // json: an array of objects keyed by column; csv: RFC 4180 with a header
  // (numbers at full precision); md: a GitHub-flavoured Markdown table;
  // table: aligned columns with a header, numbers right-aligned.
  void Print(std::ostream& out, OutputFormat format) const;
  // The json format's array.
  nlohmann::json ToJson() const;

 private:
  std::vector<std::string> columns_;
  std::vector<std::vector<nlohmann::json>> rows_;
};

// A CSV field, quoted when it must be (RFC 4180).
std::string CsvQuote(const std::string& s);

// "0.8123" style: up to 6 significant digits, no trailing zeros.
std::string FormatNumber(double v);

}  // namespace megabatch::cli

#endif  // MEGABATCH_CLI_TABLE_H_
