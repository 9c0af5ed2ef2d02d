-- 012: roads by their number ("QL14", "quốc lộ 14" -> ql14): the folded name without spaces, in a b-tree, so the
-- search finds them by equality instead of folding every row of the layer (27 ms at 1,279 rows).
CREATE INDEX infrastructure_name_nospace ON infrastructure (replace(gis_ioc_fold(name), ' ', ''));
