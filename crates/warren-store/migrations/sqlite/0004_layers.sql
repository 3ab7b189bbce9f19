-- Registry images: an image is a stack of layers shared by digest. `manifests` keeps each
-- image digest's layer list for as long as an image or a sandbox refers to it, so a sandbox
-- made from an image whose name has since moved to a new digest keeps its layers.
ALTER TABLE images ADD COLUMN source TEXT;
ALTER TABLE images ADD COLUMN layers TEXT NOT NULL DEFAULT '[]';
ALTER TABLE images ADD COLUMN config TEXT NOT NULL DEFAULT '{}';
-- An imported image is one layer named by its tar's digest.
UPDATE images SET layers = json_array(digest);

CREATE TABLE manifests (
    digest TEXT PRIMARY KEY,
    layers TEXT NOT NULL
);
INSERT OR IGNORE INTO manifests (digest, layers) SELECT digest, layers FROM images;
