#include "server/auth/token_store.h"

namespace megabatch::auth {

using store::Statement;

Result<std::unique_ptr<TokenStore>> TokenStore::Open(
    const std::string& db_path) {
  MEGABATCH_ASSIGN_OR_RETURN(std::unique_ptr<store::Db> db,
                             store::Db::Open(db_path));
  std::unique_ptr<TokenStore> tokens(new TokenStore(std::move(db)));
  MutexLock lock(&tokens->mu_);
  Result<Statement> probe =
      tokens->db_->Prepare("SELECT 1 FROM tokens LIMIT 0");
  if (!probe.ok()) {
    return FailedPreconditionError(
        "database " + db_path +
        " has no tokens table; open it with the coordinator first");
  }
  return tokens;
}

Result<int64_t> TokenStore::Create(const std::string& name,
                                   const std::string& role,
                                   const std::string& sha256_hex, double now) {
  MutexLock lock(&mu_);
  MEGABATCH_ASSIGN_OR_RETURN(
      Statement ins, db_->Prepare("INSERT INTO tokens (name, role, sha256, "
                                  "created_at) VALUES (?, ?, ?, "
                                  "?)"));
  ins.Bind(1, name).Bind(2, role).Bind(3, sha256_hex).Bind(4, now);
  MEGABATCH_RETURN_IF_ERROR(ins.Run());
  return db_->LastInsertRowid();
}

Result<std::vector<TokenRow>> TokenStore::List() {
  MutexLock lock(&mu_);
  MEGABATCH_ASSIGN_OR_RETURN(Statement q,
                             db_->Prepare("SELECT id, name, role, created_at, "
                                          "coalesce(revoked_at, 0) FROM tokens "
                                          "ORDER BY id"));
  std::vector<TokenRow> out;
  MEGABATCH_RETURN_IF_ERROR(store::ForEachRow(q, [&](Statement& r) {
    out.push_back({r.Int(0), r.Text(1), r.Text(2), r.Double(3), r.Double(4)});
  }));
  return out;
}

Status TokenStore::Revoke(int64_t token_id, double now) {
  MutexLock lock(&mu_);
  MEGABATCH_ASSIGN_OR_RETURN(
      Statement q,
      db_->Prepare("SELECT revoked_at IS NOT NULL FROM tokens WHERE id = ?"));
  q.Bind(1, token_id);
  MEGABATCH_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row)
    return NotFoundError("token " + std::to_string(token_id) + " not found");
  if (q.Int(0) != 0) {
    return FailedPreconditionError("token " + std::to_string(token_id) +
                                   " is already revoked");
  }
  MEGABATCH_ASSIGN_OR_RETURN(
      Statement up,
      db_->Prepare("UPDATE tokens SET revoked_at = ? WHERE id = ?"));
  up.Bind(1, now).Bind(2, token_id);
  return up.Run();
}

}  // namespace megabatch::auth
