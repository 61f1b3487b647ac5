-- How many feasible offers a demand's last full ranking had. A demand with few of them is ranked in
-- full again whenever an offer reaching it changes (handlers.RANK_IN_FULL_BELOW): its expanded vector
-- then comes from all its offers, not from the first ones it had. NULL for rows ranked before this
-- column: judged pair by pair, as before, until their next full ranking.
ALTER TABLE demands ADD COLUMN ranked_total integer;
