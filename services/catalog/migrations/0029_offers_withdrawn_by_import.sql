-- Who withdrew an offer: an import (its file no longer listed it, or its DELETE named it) or a
-- person (the API, the portal). A later import that lists the offer again publishes it again only
-- in the first case: a person's withdrawal stays, as the API keeps a withdrawn offer withdrawn.
ALTER TABLE offers ADD COLUMN withdrawn_by_import boolean NOT NULL DEFAULT false;
